"""silc-hf: SILC image-text models for Hugging Face transformers.

Importing the package registers the "silc" model type with the Auto classes (AutoConfig, AutoModel,
AutoModelForZeroShotImageClassification, AutoModelForImageClassification, AutoBackbone, AutoProcessor,
AutoImageProcessor, AutoTokenizer) and the open-vocabulary segmenter "silc_open_vocabulary_segmentation" (AutoModel
and the zero-shot-image-segmentation pipeline), and marks the classes for `trust_remote_code` export, so that a
saved folder also loads where this package is absent.

Layout by role: this folder holds exactly the model files a saved folder ships (configuration, modeling,
open-vocabulary modeling, image processing, processing); `zero_shot/` uses the models (prompts, segmentation,
pipelines, metrics, evaluation); `training/` trains them; `convert/` converts checkpoints; `data/` reads datasets
and generates the scenes; `tools/` holds the scripts' plumbing, model cards and plots; `demo/` is the main job.
Importing `silc_hf` or `silc_hf.zero_shot` does not import `silc_hf.training`; the training classes named here
(`SilcTrainer`, ...) are imported on first use.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

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
from .processing_silc import SilcProcessor
from .zero_shot.pipelines import SilcZeroShotImageClassificationPipeline, SilcZeroShotImageSegmentationPipeline

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


def __getattr__(name: str):
    """The training classes (`silc_hf.training.__all__`: `SilcTrainer`, `SilcTrainingArguments`, ...) on first use:
    they pull in the Trainer stack, which inference does not need."""
    if not name.startswith("__"):
        training = importlib.import_module(".training", __name__)
        if name in training.__all__:
            return getattr(training, name)
    raise AttributeError(f"module 'silc_hf' has no attribute {name!r}")


# Module paths of the flat layout (silc-hf 0.1 until the layout by role), still importable with a FutureWarning:
# user code, and `training_args.bin` files that pickled `silc_hf.trainer.SilcTrainingArguments`. `silc_hf.data`
# is a package of its own now; the names it no longer holds are forwarded by `silc_hf.data.__getattr__`.
OLD_MODULES = {
    "augmentation": "training.augmentation",
    "checkpoints": "training.checkpoints",
    "cli": "tools.cli",
    "distillation": "training.pretraining",
    "evaluation": "zero_shot.evaluation",
    "factory": "training.run",
    "losses": "training.losses",
    "model_card": "tools.model_card",
    "pipelines": "zero_shot.pipelines",
    "plotting": "tools.plotting",
    "segmentation": "zero_shot.segmentation",
    "segmentation_training": "training.open_vocab",
    "synthetic": "data.scenes",
    "tokenization": "training.tokenization",
    "trainer": "training.trainer",
}


class _OldModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `silc_hf.<old name>` to the module that now holds its contents (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in OLD_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"{__name__}.{OLD_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there.", FutureWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module was imported (and executed) under its new name


if not any(isinstance(finder, _OldModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_OldModuleFinder())


__all__ = [
    "SilcBackbone",
    "SilcConfig",
    "SilcForImageClassification",
    "SilcForOpenVocabularySegmentation",
    "SilcImageProcessor",
    "SilcModel",
    "SilcOpenVocabularySegmentationConfig",
    "SilcPreTrainedModel",
    "SilcProcessor",
    "SilcTextConfig",
    "SilcTextModel",
    "SilcVisionConfig",
    "SilcVisionModel",
    "SilcZeroShotImageClassificationPipeline",
    "SilcZeroShotImageSegmentationPipeline",
]
