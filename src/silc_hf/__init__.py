"""silc-hf: SILC image-text models for Hugging Face transformers.

Importing the package registers the "silc" model type with the Auto classes (AutoConfig, AutoModel,
AutoModelForZeroShotImageClassification, AutoModelForImageClassification, AutoBackbone, AutoProcessor,
AutoImageProcessor, AutoTokenizer) and the open-vocabulary segmenter "silc_open_vocabulary_segmentation" (AutoModel
and the zero-shot-image-segmentation pipeline), and marks the
classes for `trust_remote_code` export, so that a saved folder also loads where this package is absent.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_silc import (
    SilcConfig,
    SilcOpenVocabularySegmentationConfig,
    SilcTextConfig,
    SilcVisionConfig,
)
from .image_processing_silc import SilcImageProcessor
from .modeling_silc import (
    SilcBackbone,
    SilcForImageClassification,
    SilcModel,
    SilcPreTrainedModel,
    SilcTextModel,
    SilcVisionModel,
)
from .modeling_silc_open_vocab_seg import SilcForOpenVocabularySegmentation
from .pipelines import SilcZeroShotImageClassificationPipeline
from .processing_silc import SilcProcessor
from .segmentation import SilcZeroShotImageSegmentationPipeline

AutoConfig.register("silc", SilcConfig, exist_ok=True)
AutoConfig.register("silc_vision_model", SilcVisionConfig, exist_ok=True)
AutoConfig.register("silc_text_model", SilcTextConfig, exist_ok=True)
AutoConfig.register("silc_open_vocabulary_segmentation", SilcOpenVocabularySegmentationConfig, exist_ok=True)
AutoModel.register(SilcConfig, SilcModel, exist_ok=True)
AutoModel.register(SilcVisionConfig, SilcVisionModel, exist_ok=True)
AutoModel.register(SilcTextConfig, SilcTextModel, exist_ok=True)
# no transformers Auto class for open-vocabulary segmentation: AutoModel (and the pipeline below) load it
AutoModel.register(SilcOpenVocabularySegmentationConfig, SilcForOpenVocabularySegmentation, exist_ok=True)
AutoModelForZeroShotImageClassification.register(SilcConfig, SilcModel, exist_ok=True)
AutoModelForImageClassification.register(SilcConfig, SilcForImageClassification, exist_ok=True)
AutoBackbone.register(SilcVisionConfig, SilcBackbone, exist_ok=True)
# the image tower of an image-text folder (`register` refuses a config class other than the model's own)
AutoBackbone._model_mapping.register(SilcConfig, SilcBackbone, exist_ok=True)
AutoImageProcessor.register(SilcConfig, image_processor_classes={"pil": SilcImageProcessor}, exist_ok=True)
AutoProcessor.register(SilcConfig, SilcProcessor, exist_ok=True)
AutoImageProcessor.register(
    SilcOpenVocabularySegmentationConfig, image_processor_classes={"pil": SilcImageProcessor}, exist_ok=True
)
AutoProcessor.register(SilcOpenVocabularySegmentationConfig, SilcProcessor, exist_ok=True)
# A SILC folder names its own tokenizer class; this is the fallback for a bare `tokenizer.json`.
AutoTokenizer.register(SilcConfig, tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)
AutoTokenizer.register(SilcOpenVocabularySegmentationConfig, tokenizer_class=PreTrainedTokenizerFast, exist_ok=True)

PIPELINE_REGISTRY.register_pipeline(
    "zero-shot-image-segmentation",
    pipeline_class=SilcZeroShotImageSegmentationPipeline,
    pt_model=AutoModel,
    type="multimodal",
)

SilcConfig.register_for_auto_class()
SilcVisionConfig.register_for_auto_class()  # a saved SilcBackbone's config
SilcOpenVocabularySegmentationConfig.register_for_auto_class()
SilcModel.register_for_auto_class("AutoModel")
SilcForImageClassification.register_for_auto_class("AutoModelForImageClassification")
SilcBackbone.register_for_auto_class("AutoBackbone")
SilcForOpenVocabularySegmentation.register_for_auto_class("AutoModel")
SilcImageProcessor.register_for_auto_class("AutoImageProcessor")
SilcProcessor.register_for_auto_class("AutoProcessor")

# Training classes pull in Trainer, accelerate and datasets: imported on first use.
_LAZY = {
    "SilcTrainer": "trainer",
    "SilcTrainingArguments": "trainer",
    "SilcPretrainingModel": "distillation",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'silc_hf' has no attribute {name!r}")


__all__ = [
    "SilcBackbone",
    "SilcConfig",
    "SilcForImageClassification",
    "SilcForOpenVocabularySegmentation",
    "SilcImageProcessor",
    "SilcModel",
    "SilcOpenVocabularySegmentationConfig",
    "SilcPretrainingModel",
    "SilcPreTrainedModel",
    "SilcProcessor",
    "SilcTextConfig",
    "SilcTextModel",
    "SilcTrainer",
    "SilcTrainingArguments",
    "SilcVisionConfig",
    "SilcVisionModel",
    "SilcZeroShotImageClassificationPipeline",
    "SilcZeroShotImageSegmentationPipeline",
]
