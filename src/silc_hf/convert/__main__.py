"""Command line: convert a checkpoint into a SILC folder (model + processor + model card) that `AutoModel` loads.

python -m silc_hf.convert hf-clip openai/clip-vit-base-patch16 ./silc-from-clip
python -m silc_hf.convert hf-siglip google/siglip-base-patch16-224 ./silc-from-siglip
python -m silc_hf.convert open-clip open_clip_pytorch_model.bin ViT-B-16.json ./silc-from-open-clip \
    --tokenizer openai/clip-vit-base-patch16
python -m silc_hf.convert big-vision silc_b16.npz ./silc-b16 --tokenizer path/to/spiece.model \
    [--push-to-hub org/silc-b16]
"""

import functools
import os

from transformers import AutoTokenizer
from transformers.image_utils import PILImageResampling

from ..image_processing_silc import SilcImageProcessor
from ..processing_silc import SilcProcessor
from ..tools.cli import ArgumentParser, run_script
from ..tools.model_card import write_model_card
from .big_vision import from_big_vision
from .hf import from_hf_clip, from_hf_siglip, silc_processor_from
from .open_clip import from_open_clip

# open_clip's default normalisation (OPENAI_DATASET_MEAN / STD), used unless the model config names its own
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def push_folder(output_dir: str, repo_id: str, message: str) -> None:
    from huggingface_hub import HfApi

    HfApi().create_repo(repo_id, exist_ok=True)
    HfApi().upload_folder(folder_path=output_dir, repo_id=repo_id, commit_message=message)


def convert_hf(kind: str, source: str, output_dir: str, push_to_hub: str | None = None) -> None:
    """Convert an HF CLIP or SigLIP folder / Hub id into a SILC folder with its processor; optionally push it."""
    convert = from_hf_clip if kind == "hf-clip" else from_hf_siglip
    model, report = convert(source, return_report=True)
    print(report)
    text_config = model.config.text_config
    fixed_length = text_config.max_position_embeddings if text_config.fixed_length_padding else None
    processor = silc_processor_from(source, fixed_text_length=fixed_length)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_model_card(
        output_dir,
        model.config,
        base_model=source,
        provenance=f"Converted from the `transformers` {kind[3:].upper()} checkpoint `{source}` with "
        f"`python -m silc_hf.convert {kind}`.",
    )
    if push_to_hub:
        push_folder(output_dir, push_to_hub, f"Add SILC model converted from {source}")
    print(f"Wrote a SILC folder to {output_dir}" + (f" and pushed it to {push_to_hub}" if push_to_hub else ""))


def convert_open_clip(
    checkpoint: str, model_config: str, output_dir: str, tokenizer: str | None = None, push_to_hub: str | None = None
) -> None:
    """Convert an open_clip ViT CLIP checkpoint and its model config JSON into a SILC folder: model, CLIP-style
    image processor (shortest side to the input size, bicubic, center crop, the config's mean/std or OpenAI's),
    the tokenizer when one is named (open_clip's is CLIP's BPE) and a model card; optionally push it."""
    import json

    model, report = from_open_clip(checkpoint, model_config, return_report=True)
    print(report)
    with open(model_config) as file:
        vision_cfg = json.load(file).get("vision_cfg", {})
    size = model.config.vision_config.image_size
    image_processor = SilcImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
        image_mean=list(vision_cfg.get("image_mean", OPENAI_MEAN)),
        image_std=list(vision_cfg.get("image_std", OPENAI_STD)),
    )
    model.save_pretrained(output_dir)
    if tokenizer:
        text_tokenizer = load_tokenizer(tokenizer, model.config.text_config.max_position_embeddings)
        SilcProcessor(image_processor, text_tokenizer).save_pretrained(output_dir)
    else:
        image_processor.save_pretrained(output_dir)
        print("No --tokenizer given: the folder has no tokenizer, so text inputs and the pipelines need one passed in.")
    write_model_card(
        output_dir,
        model.config,
        provenance=f"Converted from the open_clip checkpoint `{os.path.basename(checkpoint)}` "
        f"({os.path.basename(model_config)}) with `python -m silc_hf.convert open-clip`.",
    )
    if push_to_hub:
        push_folder(output_dir, push_to_hub, "Add SILC model converted from open_clip")
    print(f"Wrote a SILC folder to {output_dir}" + (f" and pushed it to {push_to_hub}" if push_to_hub else ""))


def load_tokenizer(name_or_path: str, max_length: int):
    """Any HF tokenizer (folder or Hub id), or a SentencePiece `.model` file (read as a SigLIP tokenizer,
    which appends `</s>` and pads with it, as big_vision's SigLIP preprocessing does)."""
    if name_or_path.endswith(".model"):
        try:
            from transformers import SiglipTokenizer

            tokenizer = SiglipTokenizer(vocab_file=name_or_path, model_max_length=max_length)
        except ImportError as error:
            raise ImportError(
                f"Reading {name_or_path} needs sentencepiece: pip install sentencepiece ({error})."
            ) from error
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.model_max_length = max_length
    return tokenizer


def convert_big_vision(
    checkpoint: str,
    output_dir: str,
    tokenizer: str | None = None,
    image_size: int | None = None,
    text_pooling: str = "last",
    loss_type: str | None = None,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    results: str | None = None,
    push_to_hub: str | None = None,
) -> None:
    """Convert a big_vision `.npz` into a complete SILC folder: model, processor ([-1, 1] inputs), tokenizer
    and model card; optionally push it to the Hub."""
    max_length = None
    text_tokenizer = None
    if tokenizer:
        # the text length is fixed by the checkpoint; read it before building the tokenizer
        from .big_vision import load_npz, unscan

        max_length = unscan(load_npz(checkpoint))["txt/pos_embedding"].shape[1]
        text_tokenizer = load_tokenizer(tokenizer, max_length)
        pad_token_id = text_tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        eos_token_id = text_tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    model, report = from_big_vision(
        checkpoint,
        text_pooling=text_pooling,
        loss_type=loss_type,
        pad_token_id=1 if pad_token_id is None else pad_token_id,
        eos_token_id=1 if eos_token_id is None else eos_token_id,
        image_size=image_size,
        return_report=True,
    )
    print(report)
    size = model.config.vision_config.image_size
    # big_vision SigLIP/SILC preprocessing: resize(size) | value_range(-1, 1)
    image_processor = SilcImageProcessor(
        size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    model.save_pretrained(output_dir)
    if text_tokenizer is not None:
        if len(text_tokenizer) > model.config.text_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(text_tokenizer)} tokens but the text tower only "
                f"{model.config.text_config.vocab_size}; "
                "it is not the tokenizer this checkpoint was trained with."
            )
        SilcProcessor(
            image_processor, text_tokenizer, fixed_text_length=model.config.text_config.max_position_embeddings
        ).save_pretrained(output_dir)
    else:
        image_processor.save_pretrained(output_dir)
        print("No --tokenizer given: the folder has no tokenizer, so text inputs and the pipelines need one passed in.")
    name = os.path.basename(os.path.normpath(output_dir))
    write_model_card(
        output_dir,
        model.config,
        model_name=name,
        results=results,
        provenance=f"Converted from the big_vision checkpoint `{os.path.basename(checkpoint)}` with "
        f"`python -m silc_hf.convert big-vision` ({len(report.consumed)} parameters; skipped: "
        f"{', '.join(sorted(report.skipped)) or 'none'}).",
    )
    if push_to_hub:
        push_folder(output_dir, push_to_hub, "Add SILC model converted from big_vision")
    print(f"Wrote a SILC folder to {output_dir}" + (f" and pushed it to {push_to_hub}" if push_to_hub else ""))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m silc_hf.convert", description=__doc__.splitlines()[0], config_file=False)
    sub = parser.add_subparsers(
        dest="kind", required=True, parser_class=functools.partial(ArgumentParser, config_file=False)
    )
    for kind, what in (("hf-clip", "a transformers CLIPModel"), ("hf-siglip", "a transformers SiglipModel")):
        p = sub.add_parser(kind, help=f"convert {what} (folder or Hub id)")
        p.add_argument("source", help="folder or Hub id of the source model and its processor")
        p.add_argument("output_dir", help="where to write the SILC folder")
        p.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder to this Hub repository")
    p = sub.add_parser("open-clip", help="convert an open_clip ViT CLIP checkpoint with its model config JSON")
    p.add_argument("checkpoint", help="the .bin / .pt / .safetensors state dict (a training checkpoint works too)")
    p.add_argument("model_config", help="open_clip's model config JSON (e.g. open_clip/model_configs/ViT-B-16.json)")
    p.add_argument("output_dir", help="where to write the SILC folder")
    p.add_argument("--tokenizer", help="a CLIP tokenizer folder or Hub id, e.g. openai/clip-vit-base-patch16")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder to this Hub repository")
    p = sub.add_parser("big-vision", help="convert a big_vision two-tower .npz checkpoint (SigLIP / SILC)")
    p.add_argument("checkpoint", help="the .npz file")
    p.add_argument("output_dir", help="where to write the SILC folder")
    p.add_argument("--tokenizer", help="a SentencePiece .model file, or any HF tokenizer folder / Hub id")
    p.add_argument("--image-size", type=int, help="resample the position embeddings to this resolution")
    p.add_argument(
        "--text-pooling",
        choices=["last", "first", "mean"],
        default="last",
        help="the text tower's pooling (SigLIP/SILC: last)",
    )
    p.add_argument(
        "--loss-type", choices=["softmax", "sigmoid"], help="default: sigmoid if the checkpoint has a bias `b`"
    )
    p.add_argument("--pad-token-id", type=int, help="default: the tokenizer's, else 1 (big_vision SigLIP)")
    p.add_argument("--eos-token-id", type=int, help="default: the tokenizer's, else 1")
    p.add_argument("--results", help="evaluation results JSON to put in the model card")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the folder to this Hub repository")
    args = parser.parse(argv)
    if args.kind == "big-vision":
        convert_big_vision(
            args.checkpoint,
            args.output_dir,
            args.tokenizer,
            args.image_size,
            args.text_pooling,
            args.loss_type,
            args.pad_token_id,
            args.eos_token_id,
            args.results,
            args.push_to_hub,
        )
    elif args.kind == "open-clip":
        convert_open_clip(args.checkpoint, args.model_config, args.output_dir, args.tokenizer, args.push_to_hub)
    else:
        convert_hf(args.kind, args.source, args.output_dir, args.push_to_hub)


if __name__ == "__main__":
    run_script(main)
