"""SILC processor: an image processor and any Hugging Face tokenizer."""

from transformers.processing_utils import ProcessorMixin


class SilcProcessor(ProcessorMixin):
    r"""
    Wraps a [`SilcImageProcessor`] and a tokenizer into a single processor.

    Args:
        image_processor ([`SilcImageProcessor`]): prepares `pixel_values`.
        tokenizer ([`PreTrainedTokenizerBase`]): any tokenizer (CLIP BPE, SentencePiece, ...).
        fixed_text_length (`int`, *optional*): for text towers trained on fixed-length inputs (SigLIP,
            big_vision), the length every text is padded and truncated to unless the call says otherwise.
            `None` pads dynamically (CLIP).
    """

    def __init__(self, image_processor=None, tokenizer=None, fixed_text_length: int | None = None, **kwargs):
        self.fixed_text_length = fixed_text_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, images=None, text=None, **kwargs):
        """Process `images` and/or `text`; extra arguments go to the image processor or the tokenizer."""
        if text is not None:
            if self.fixed_text_length is not None:
                kwargs.setdefault("padding", "max_length")
                kwargs.setdefault("max_length", self.fixed_text_length)
                kwargs.setdefault("truncation", True)
            else:  # pad to the longest; never past the text tower's length (the tokenizer's model_max_length)
                kwargs.setdefault("padding", True)
                kwargs.setdefault("truncation", True)
        return super().__call__(images=images, text=text, **kwargs)


__all__ = ["SilcProcessor"]
