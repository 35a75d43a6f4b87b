"""Pipelines for SILC models.

The stock `pipeline("zero-shot-image-classification")` works on SILC folders but reads every non-"siglip"
model with a softmax over the labels. `SilcZeroShotImageClassificationPipeline` reads the model's
`loss_type` instead: independent sigmoid scores for sigmoid-trained (SILC-S / SigLIP) models, softmax for
softmax-trained (SILC-C / CLIP) ones, overridable per call with `score_function=`. It also truncates labels
to the text tower's length with a warning naming them, refuses empty or string `candidate_labels` and
templates without `{}` with a message that says what to pass, and passes `tokenizer_kwargs` on.
"""

from transformers.pipelines import ZeroShotImageClassificationPipeline

from .segmentation import check_labels_and_templates, warn_if_truncated

SCORE_FUNCTIONS = ("softmax", "sigmoid")


class SilcZeroShotImageClassificationPipeline(ZeroShotImageClassificationPipeline):
    """Zero-shot image classification that scores labels the way the model was trained.

    ```python
    >>> from transformers import pipeline
    >>> from silc_hf import SilcZeroShotImageClassificationPipeline
    >>> clf = pipeline("zero-shot-image-classification", model="path/to/silc",
    ...                pipeline_class=SilcZeroShotImageClassificationPipeline)
    >>> clf(image, candidate_labels=["a cat", "a dog"])                     # sigmoid for loss_type="sigmoid"
    >>> clf(image, candidate_labels=["a cat", "a dog"], score_function="softmax")
    ```
    """

    def _sanitize_parameters(self, score_function=None, tokenizer_kwargs=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        # Unlike the stock pipeline, truncate labels that would not fit the text tower (and honour tokenizer_kwargs).
        max_length = self.model.config.text_config.max_position_embeddings
        preprocess_params["tokenizer_kwargs"] = {
            "truncation": True,
            "max_length": max_length,
            **(tokenizer_kwargs or {}),
        }
        if score_function is not None:
            if score_function not in SCORE_FUNCTIONS:
                raise ValueError(f"score_function={score_function!r} is not supported; use 'softmax' or 'sigmoid'.")
            postprocess_params["score_function"] = score_function
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, image, candidate_labels=None, hypothesis_template="This is a photo of {}.", **kwargs):
        labels, (template,) = check_labels_and_templates(candidate_labels, [hypothesis_template])
        max_length = self.model.config.text_config.max_position_embeddings
        warn_if_truncated(self.tokenizer, [template.format(label) for label in labels], labels, max_length)
        return super().preprocess(image, labels, template, **kwargs)

    def postprocess(self, model_outputs, score_function=None):
        if score_function is None:
            score_function = "sigmoid" if getattr(self.model.config, "loss_type", "softmax") == "sigmoid" else "softmax"
        logits = model_outputs["logits"][0]  # (num_labels,)
        scores = logits.sigmoid() if score_function == "sigmoid" else logits.softmax(dim=-1)
        ranked = sorted(zip(scores.tolist(), model_outputs["candidate_labels"]), key=lambda pair: -pair[0])
        return [{"score": score, "label": label} for score, label in ranked]


__all__ = ["SilcZeroShotImageClassificationPipeline"]
