"""Pipelines for SILC models.

- Classification: the stock `pipeline("zero-shot-image-classification")` works on SILC folders but reads every
  non-"siglip" model with a softmax over the labels. `SilcZeroShotImageClassificationPipeline` reads the model's
  `loss_type` instead: independent sigmoid scores for sigmoid-trained (SILC-S / SigLIP) models, softmax for
  softmax-trained (SILC-C / CLIP) ones, overridable per call with `score_function=`. It also truncates labels to
  the text tower's length with a warning naming them, refuses empty or string `candidate_labels` and templates
  without `{}` with a message that says what to pass, and passes `tokenizer_kwargs` on.
- Segmentation: `pipeline("zero-shot-image-segmentation")` (registered by `import silc_hf`), for a `SilcModel`
  (training-free, `silc_hf.zero_shot.segmentation`) and a trained `SilcForOpenVocabularySegmentation`.
"""

from transformers import Pipeline
from transformers.pipelines import ZeroShotImageClassificationPipeline

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES
from ..modeling_silc_open_vocab_seg import SilcForOpenVocabularySegmentation
from .finite import ensure_finite
from .prompts import check_labels_and_templates, warn_if_truncated
from .segmentation import class_logits, logits_to_result, result_to_pipeline_output, segmentation_inputs

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
        logits = ensure_finite(model_outputs["logits"], ["the image"], "scores")[0]  # (num_labels,)
        scores = logits.sigmoid() if score_function == "sigmoid" else logits.softmax(dim=-1)
        ranked = sorted(zip(scores.tolist(), model_outputs["candidate_labels"]), key=lambda pair: -pair[0])
        return [{"score": score, "label": label} for score, label in ranked]


class SilcZeroShotImageSegmentationPipeline(Pipeline):
    """`pipeline("zero-shot-image-segmentation", model=...)` for SILC models: a `SilcModel` segments
    training-free from its dense features, a `SilcForOpenVocabularySegmentation` with its trained decoder.

    Call with an image (path, URL or PIL image) and `candidate_labels`; options: `hypothesis_template` (one
    template or a list, for prompt ensembling; a trained segmenter uses the templates it was trained with),
    `method` ("value" or "plain" dense features) and `sliding_window` (default True) for a `SilcModel`,
    `background_threshold`, `return_label_map` (also return the per-pixel class indices as a tensor under
    "label_map").
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        hypothesis_template=None,
        method=None,
        background_threshold=None,
        sliding_window=None,
        return_label_map=None,
        timeout=None,
        **kwargs,
    ):
        preprocess = {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            preprocess["templates"] = (
                [hypothesis_template] if isinstance(hypothesis_template, str) else list(hypothesis_template)
            )
        if timeout is not None:
            preprocess["timeout"] = timeout
        forward = {
            key: value for key, value in (("method", method), ("sliding_window", sliding_window)) if value is not None
        }
        postprocess = {}
        if background_threshold is not None:
            postprocess["background_threshold"] = background_threshold
        if return_label_map is not None:
            postprocess["return_label_map"] = return_label_map
        return preprocess, forward, postprocess

    def __call__(self, image, candidate_labels=None, **kwargs):
        candidate_labels, _ = check_labels_and_templates(candidate_labels, kwargs.get("hypothesis_template", "{}"))
        if isinstance(self.model, SilcForOpenVocabularySegmentation) and "hypothesis_template" in kwargs:
            raise ValueError(
                "This segmenter was trained with the prompts in its config.prompt_templates "
                f"({self.model.config.prompt_templates}); drop hypothesis_template."
            )
        return super().__call__(image, candidate_labels=candidate_labels, **kwargs)

    def preprocess(self, image, candidate_labels=None, templates=DEFAULT_PROMPT_TEMPLATES, timeout=None):
        from transformers.image_utils import load_image

        image = load_image(image, timeout=timeout)
        config = self.model.config
        segmenter = isinstance(self.model, SilcForOpenVocabularySegmentation)
        vision_config = config.silc_config.vision_config if segmenter else config.vision_config
        resized, full = segmentation_inputs(self.image_processor, image, vision_config.image_size)
        return {
            "resized": resized,
            "full": full,
            "candidate_labels": list(candidate_labels),
            "templates": tuple(templates),
        }

    def _forward(self, inputs, method="value", sliding_window=True):
        labels = inputs["candidate_labels"]
        logits = class_logits(
            self.model,
            self.tokenizer,
            inputs["resized"],
            inputs["full"],
            labels,
            inputs["templates"],
            method,
            sliding_window,
        )
        return {"logits": logits, "candidate_labels": labels}

    def postprocess(self, outputs, background_threshold=None, return_label_map=False):
        loss_type = getattr(self.model.config, "loss_type", "softmax")  # a trained segmenter: cross-entropy
        result = logits_to_result(outputs["logits"], outputs["candidate_labels"], loss_type, background_threshold)
        segments = result_to_pipeline_output(result)
        if return_label_map:
            return {"segments": segments, "label_map": result.labels}
        return segments


__all__ = ["SilcZeroShotImageClassificationPipeline", "SilcZeroShotImageSegmentationPipeline"]
