"""Command line: convert a checkpoint into a SILC folder (model + processor) that `AutoModel` loads.

    python -m silc_hf.convert hf-clip openai/clip-vit-base-patch16 ./silc-from-clip
    python -m silc_hf.convert hf-siglip google/siglip-base-patch16-224 ./silc-from-siglip
"""

import argparse

from .hf import from_hf_clip, from_hf_siglip, silc_processor_from


def convert_hf(kind: str, source: str, output_dir: str) -> None:
    """Convert an HF CLIP or SigLIP folder / Hub id into a SILC folder with its processor."""
    convert = from_hf_clip if kind == "hf-clip" else from_hf_siglip
    model, report = convert(source, return_report=True)
    print(report)
    text_config = model.config.text_config
    fixed_length = text_config.max_position_embeddings if text_config.fixed_length_padding else None
    processor = silc_processor_from(source, fixed_text_length=fixed_length)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    print(f"Wrote a SILC folder to {output_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m silc_hf.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, what in (("hf-clip", "a transformers CLIPModel"), ("hf-siglip", "a transformers SiglipModel")):
        p = sub.add_parser(kind, help=f"convert {what} (folder or Hub id)")
        p.add_argument("source", help="folder or Hub id of the source model and its processor")
        p.add_argument("output_dir", help="where to write the SILC folder")
    args = parser.parse_args(argv)
    convert_hf(args.kind, args.source, args.output_dir)


if __name__ == "__main__":
    main()
