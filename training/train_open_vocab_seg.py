"""Fine-tune an open-vocabulary segmenter (SILC towers + CAT-Seg-style cost aggregation) with the `Trainer`, on any
`datasets` dataset with an image column and a mask column of integer class ids, some classes hidden from training.

    python training/train_open_vocab_seg.py --config training/configs/open_vocab_seg_scenes.json
    python training/train_open_vocab_seg.py --model outputs/demo/model --train_data outputs/demo/data/train \\
        --eval_data outputs/demo/data/test --class_names background tree house car flower fish \\
        --unseen_classes flower fish --output_dir outputs/open-vocab-seg --max_steps 300 --use_cpu true

Arguments: `silc_hf.training.OpenVocabSegArguments` and every `TrainingArguments` field; `--config` reads a JSON or
YAML file of the same names, and command-line arguments override it. Class `i` of `--class_names` has mask value
`i + mask_offset`; other mask values are ignored. Training sees the classes not in `--unseen_classes` (pixels of
unseen classes carry no loss); evaluation uses every class and reports `eval_mIoU`, `eval_mIoU_seen`,
`eval_mIoU_unseen` and each class's IoU. Before training it evaluates the SILC model zero-shot (training-free, its
dense features against the same class names) on the same split: the baseline the segmenter should beat.
Writes the segmenter and its processor to `output_dir` (loads with `AutoModel` and the
`zero-shot-image-segmentation` pipeline), `open_vocab_seg_results.json` and `training_curve.png`.
"""

from transformers import TrainingArguments

from silc_hf.tools.cli import ArgumentParser, run_script
from silc_hf.training import OpenVocabSegArguments
from silc_hf.training.open_vocab import train_open_vocab_segmenter


def parse_args(argv: list[str] | None = None) -> tuple[OpenVocabSegArguments, TrainingArguments]:
    parser = ArgumentParser((OpenVocabSegArguments, TrainingArguments), description=__doc__.splitlines()[0])
    return parser.parse(argv)


def main(argv: list[str] | None = None) -> dict:
    return train_open_vocab_segmenter(*parse_args(argv))


if __name__ == "__main__":
    run_script(main)
