"""torch.compile vs eager: inference (image + text embeddings) and a SILC training step, with the towers compiled
as `SilcTrainer` does under `--torch_compile` (`fullgraph=True`, one graph per view shape).

    python benchmarks/bench_compile.py [--preset demo|ti16] [--batch-size 32] [--threads 2] [--output compile.json]

Median seconds per call after the compilation warm-up (whose time is reported too), float32.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_train_step import identity_augment  # noqa: E402

from silc_hf import SilcConfig, SilcModel  # noqa: E402
from silc_hf.demo import DEMO_MODEL  # noqa: E402
from silc_hf.distillation import SilcPretrainingModel  # noqa: E402

PRESETS = {
    "demo": (DEMO_MODEL, 4, 32, 128),  # (config, local crops, local size, prototypes): the demo's model and recipe
    "ti16": (
        {
            "vision_config": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3),
            "text_config": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3,
                                projection_dim=192),
        },
        8, 96, 65536,
    ),
}


def seconds(fn, steps: int) -> tuple[float, float]:
    """(first call, median of the next `steps` calls) in seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def inputs_for(config: SilcConfig, batch: int, num_local: int, local: int) -> dict:
    size, length = config.vision_config.image_size, config.text_config.max_position_embeddings
    generator = torch.Generator().manual_seed(0)

    input_ids = torch.randint(2, config.text_config.vocab_size - 1, (batch, length), generator=generator)
    input_ids[:, -1] = config.text_config.eos_token_id
    return {
        "global_views": torch.randint(0, 256, (batch, 2, 3, size, size), dtype=torch.uint8, generator=generator),
        "global_augment": identity_augment(batch, 2),
        "local_views": torch.randint(0, 256, (batch, num_local, 3, local, local), dtype=torch.uint8, generator=generator),
        "local_augment": identity_augment(batch, num_local),
        "input_ids": input_ids,
    }


def measure(preset: str, batch: int, steps: int, compiled: bool) -> dict:
    model_config, num_local, local, prototypes = PRESETS[preset]
    torch.manual_seed(0)
    config = SilcConfig(**model_config)
    wrapper = SilcPretrainingModel(SilcModel(config), head_num_prototypes=prototypes).train()
    if compiled:
        for module in (wrapper.student.vision_model, wrapper.student.text_model, wrapper.student_head, wrapper.teacher):
            module.compile(fullgraph=True, dynamic=False)
    optimizer = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-4)
    inputs = inputs_for(config, batch, num_local, local)

    def step():
        loss = wrapper(**inputs)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        wrapper.update_teacher(0.999)

    pixels = torch.randn(batch, 3, config.vision_config.image_size, config.vision_config.image_size)
    model = wrapper.student

    def infer():
        with torch.no_grad():
            model.get_image_features(pixel_values=pixels)
            model.get_text_features(input_ids=inputs["input_ids"])

    wrapper.eval()
    infer_first, infer_s = seconds(infer, steps)
    wrapper.train()
    step_first, step_s = seconds(step, steps)
    return {"inference_s": infer_s, "inference_first_call_s": infer_first, "train_step_s": step_s,
            "train_first_call_s": step_first}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"preset": args.preset, "batch_size": args.batch_size, "threads": args.threads}
    for name in ("eager", "compiled"):
        results[name] = measure(args.preset, args.batch_size, args.steps, name == "compiled")
    eager, compiled = results["eager"], results["compiled"]
    print(f"{args.preset} model, batch {args.batch_size}, CPU, {args.threads} threads, float32 (median of {args.steps})\n")
    print("| | eager | compiled | speedup | compile warm-up |\n|---|---|---|---|---|")
    for key, label in (("inference_s", "inference (image + text)"), ("train_step_s", "SILC train step")):
        first = key.replace("_s", "_first_call_s") if key == "inference_s" else "train_first_call_s"
        print(f"| {label} | {eager[key] * 1000:.0f} ms | {compiled[key] * 1000:.0f} ms | "
              f"{eager[key] / compiled[key]:.2f}x | {compiled[first]:.0f} s |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
