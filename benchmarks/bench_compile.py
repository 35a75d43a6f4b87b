"""torch.compile vs eager: inference (image + text embeddings) and a SILC training step, with the towers compiled
as `SilcTrainer` does under `--torch_compile` (`fullgraph=True`, one graph per view shape).

    OMP_NUM_THREADS=2 python benchmarks/bench_compile.py [--preset demo|ti16] [--batch_size 32] [--results compile.json]

Median seconds per call after the compilation warm-up (whose time is reported too), float32.
"""

import torch

from silc_hf import SilcConfig, SilcModel
from silc_hf.demo.recipe import DEMO_MODEL
from silc_hf.tools.benchmark import random_pretraining_batch, time_calls
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.pretraining import SilcPretrainingModel

PRESETS = {
    "demo": (DEMO_MODEL, 4, 32, 128),  # (config, local crops, local size, prototypes): the demo's model and recipe
    "ti16": (
        {
            "vision_config": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3),
            "text_config": dict(
                hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3, projection_dim=192
            ),
        },
        8,
        96,
        65536,
    ),
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
    inputs = random_pretraining_batch(config, batch, num_local, local)

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
    inference = time_calls(infer, steps)
    wrapper.train()
    training = time_calls(step, steps)
    return {
        "inference_s": inference.median,
        "inference_first_call_s": inference.first,
        "train_step_s": training.median,
        "train_first_call_s": training.first,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--results", help="write the results as JSON")
    args = parser.parse(argv)
    threads = torch.get_num_threads()
    results = {"preset": args.preset, "batch_size": args.batch_size, "threads": threads}
    for name in ("eager", "compiled"):
        results[name] = measure(args.preset, args.batch_size, args.steps, name == "compiled")
    eager, compiled = results["eager"], results["compiled"]
    print(f"{args.preset} model, batch {args.batch_size}, CPU, {threads} threads, float32 (median of {args.steps})\n")
    print("| | eager | compiled | speedup | compile warm-up |\n|---|---|---|---|---|")
    for key, label in (("inference_s", "inference (image + text)"), ("train_step_s", "SILC train step")):
        first = key.replace("_s", "_first_call_s") if key == "inference_s" else "train_first_call_s"
        print(
            f"| {label} | {eager[key] * 1000:.0f} ms | {compiled[key] * 1000:.0f} ms | "
            f"{eager[key] / compiled[key]:.2f}x | {compiled[first]:.0f} s |"
        )
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
