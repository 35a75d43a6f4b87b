"""Training SILC: the arguments, the multi-crop data, the losses, the pretraining task (student, head, EMA teacher),
`SilcTrainer`, checkpoints, the run builder and the open-vocabulary fine-tuning. Imports the Trainer stack
(accelerate, datasets); inference needs none of it (`silc_hf`, `silc_hf.zero_shot`)."""

from .arguments import (
    ClassificationFinetuneArguments,
    MultiCropArguments,
    OpenVocabSegArguments,
    SilcDataArguments,
    SilcModelArguments,
    SilcTrainingArguments,
)
from .augmentation import MultiCropTransform
from .data import MultiCropDataset, SamplePreparer, SilcMultiCropCollator, StreamingMultiCropDataset
from .open_vocab import SegmentationMetrics, SilcSegmentationCollator, SilcSegmentationTrainer
from .pretraining import DINOHead, SilcPretrainingModel
from .run import build_trainer, run_training
from .trainer import SilcTrainer

__all__ = [
    "ClassificationFinetuneArguments",
    "DINOHead",
    "MultiCropArguments",
    "MultiCropDataset",
    "MultiCropTransform",
    "OpenVocabSegArguments",
    "SamplePreparer",
    "SegmentationMetrics",
    "SilcDataArguments",
    "SilcModelArguments",
    "SilcMultiCropCollator",
    "SilcPretrainingModel",
    "SilcSegmentationCollator",
    "SilcSegmentationTrainer",
    "SilcTrainer",
    "SilcTrainingArguments",
    "StreamingMultiCropDataset",
    "build_trainer",
    "run_training",
]
