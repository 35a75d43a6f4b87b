"""What a data worker spends per image (decode + the 2 global and 8 local crops of SILC-B/16), before and after
reduced JPEG decoding, and how many CPU cores one GPU would need to keep up.

    python benchmarks/bench_data_pipeline.py [--images 40] [--results bench_data_pipeline.json]

"before" decodes every JPEG at full resolution and cuts the views from it (the previous data path); "after" is
`SamplePreparer`: the crop boxes are drawn first, then the JPEG is decoded at 1/2, 1/4 or 1/8 scale when every
box stays at least as large as its view, then the views are cut. Single thread, CPU time per image. Cores per
GPU = images/s one H200 consumes (FLOP model of `silc_hf.tools.benchmark`, SILC-B/16 at 224 px, 8 local crops of
96 px, 989 TFLOP/s bf16 peak at 45 % MFU) x CPU seconds per image.
"""

import numpy as np

from silc_hf import SilcConfig
from silc_hf.tools.benchmark import mean_cpu_ms, photo_like_jpeg, step_flops
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.arguments import MultiCropArguments
from silc_hf.training.augmentation import MultiCropTransform
from silc_hf.training.data import SamplePreparer

SIZES = [(500, 375), (1024, 768), (2048, 1536)]
H200_BF16_PEAK, MFU = 989e12, 0.45


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="JPEGs per size (different content and crops)")
    parser.add_argument("--results", help="write the results as JSON")
    args = parser.parse(argv)

    config = SilcConfig.silc_b16()
    transform = MultiCropTransform(MultiCropArguments(num_local_crops=8, local_crop_size=96), global_crop_size=224)
    head_params = 768 * 2048 + 2048 * 2048 + 2048 * 256 + 256 * 65536  # DINO head of SILC-B/16
    flops_per_image = step_flops(config.silc_b16(), 8, 96, head_params)[1]
    images_per_s = H200_BF16_PEAK * MFU / flops_per_image
    preparer = SamplePreparer(transform)

    def before(item):
        example, seed = item
        return transform(preparer.image(example), np.random.default_rng(seed))

    def after(item):
        example, seed = item
        return preparer(example, np.random.default_rng(seed))

    rows = []
    for width, height in SIZES:
        items = [
            ({"image": {"bytes": photo_like_jpeg(width, height, seed), "path": None}, "text": "a photo"}, seed)
            for seed in range(args.images)
        ]
        ms_before, ms_after = mean_cpu_ms(before, items), mean_cpu_ms(after, items)
        rows.append(
            {
                "size": f"{width}x{height}",
                "ms_before": ms_before,
                "ms_after": ms_after,
                "speedup": ms_before / ms_after,
                "cores_per_h200_before": images_per_s * ms_before / 1000,
                "cores_per_h200_after": images_per_s * ms_after / 1000,
            }
        )
    results = {"gflop_per_image": flops_per_image / 1e9, "h200_images_per_s": images_per_s, "rows": rows}
    print(
        f"SILC-B/16 step: {flops_per_image / 1e9:.0f} GFLOP per image -> one H200 at 45 % MFU uses "
        f"{images_per_s:.0f} images/s\n"
    )
    print("| JPEG | CPU ms/image before | after | speedup | cores per H200 before | after |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['ms_before']:.1f} | {r['ms_after']:.1f} | {r['speedup']:.2f}x | "
            f"{r['cores_per_h200_before']:.1f} | {r['cores_per_h200_after']:.1f} |"
        )
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
