"""One-command GPU check: mixed precision, attention kernels, SILC-B/16 training speed and memory, inference
against HF CLIP of the same size. Prints a table and writes JSON; about 5 minutes on one H100/H200.

    python benchmarks/gpu_check.py [--results gpu_check.json] [--max_batch 512] [--steps 10]

Without CUDA it says so and exits 0. Checks, all on SILC-B/16 (ViT-B/16 at 224 px, 8 local crops of 96 px,
65536 prototypes, sigmoid loss; random inputs):

1. bf16 vs float32: the same training step's losses under autocast bf16 and in float32 (relative difference).
2. Attention kernels: the model's outputs with PyTorch SDPA restricted to the flash kernel vs the math kernel.
3. Training: the largest batch (power of 2, up to --max-batch) whose step fits, its step time, samples/s, peak
   memory, and MFU = FLOP model of `bench_train_step.py` x samples/s / the measured bf16 matmul peak.
4. Inference: image + text embedding samples/s at batch 256 in bf16, SilcModel vs transformers' CLIPModel
   with the same tower sizes.
"""

import time

import torch

from silc_hf import SilcConfig, SilcModel
from silc_hf.tools.benchmark import random_pretraining_batch, step_flops, time_calls
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.pretraining import SilcPretrainingModel

LOCAL_CROPS, LOCAL_SIZE = 8, 96


def seconds(fn, steps: int) -> float:
    """Median seconds per call after two warm-up calls."""
    return time_calls(fn, steps, warmup=1, device="cuda").median


def matmul_peak_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192**3 / seconds(lambda: a @ b, 20) / 1e12


def make_inputs(config: SilcConfig, batch: int) -> dict:
    return random_pretraining_batch(config, batch, LOCAL_CROPS, LOCAL_SIZE, device="cuda")


def build(config: SilcConfig) -> SilcPretrainingModel:
    torch.manual_seed(0)
    return SilcPretrainingModel(SilcModel(config), head_num_prototypes=65536).cuda().train()


def precision_check(config: SilcConfig) -> dict:
    model, inputs = build(config), make_inputs(config, 16)
    with torch.no_grad():
        reference = model(**inputs)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = model(**inputs)
    return {
        key: abs(mixed[key].item() - reference[key].item()) / abs(reference[key].item())
        for key in ("contrastive_loss", "distillation_loss")
    }


def attention_check(config: SilcConfig) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = SilcModel(config).cuda().eval().to(torch.bfloat16)
    pixels = torch.randn(16, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        with sdpa_kernel(SDPBackend.MATH):
            reference = model.get_image_features(pixel_values=pixels).pooler_output.float()
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                flash = model.get_image_features(pixel_values=pixels).pooler_output.float()
        except RuntimeError as error:
            return {"flash_available": False, "reason": str(error).splitlines()[0]}
    cosine = torch.nn.functional.cosine_similarity(flash, reference, dim=-1).min().item()
    return {
        "flash_available": True,
        "min_cosine_flash_vs_math": cosine,
        "max_abs_difference": (flash - reference).abs().max().item(),
    }


def training_check(config: SilcConfig, max_batch: int, steps: int, peak_tflops: float) -> dict:
    model = build(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    head_params = sum(p.numel() for p in model.student_head.parameters())
    flops_per_image = step_flops(config, LOCAL_CROPS, LOCAL_SIZE, head_params)[1]
    best = None
    batch = 32
    while batch <= max_batch:
        try:
            inputs = make_inputs(config, batch)

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(**inputs)["loss"]
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                model.update_teacher(0.999)

            torch.cuda.reset_peak_memory_stats()
            step_s = seconds(step, steps)
            best = {
                "batch": batch,
                "step_s": step_s,
                "samples_per_s": batch / step_s,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
            batch *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    if best is None:
        return {"error": "batch 32 does not fit"}
    best["gflop_per_image"] = flops_per_image / 1e9
    best["mfu"] = flops_per_image * best["samples_per_s"] / (peak_tflops * 1e12)
    return best


def inference_check(config: SilcConfig, steps: int) -> dict:
    from transformers import CLIPConfig, CLIPModel

    vision, text = config.vision_config, config.text_config
    clip_config = CLIPConfig(
        vision_config=dict(
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads,
            image_size=vision.image_size,
            patch_size=vision.patch_size,
        ),
        text_config=dict(
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            max_position_embeddings=text.max_position_embeddings,
            vocab_size=text.vocab_size,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=text.vocab_size - 1,
        ),
        projection_dim=config.projection_dim,
    )
    pixels = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    input_ids = torch.randint(2, 30000, (256, text.max_position_embeddings), device="cuda")
    input_ids[:, -1] = text.vocab_size - 1  # CLIP pools at its EOS

    def samples_per_s(model) -> float:  # the model is freed on return
        model = model.cuda().eval().to(torch.bfloat16)

        def forward():
            with torch.no_grad():
                model.get_image_features(pixel_values=pixels)
                model.get_text_features(input_ids=input_ids)

        return 256 / seconds(forward, steps)

    results = {"silc_samples_per_s": samples_per_s(SilcModel(config))}
    torch.cuda.empty_cache()
    results["hf_clip_samples_per_s"] = samples_per_s(CLIPModel(clip_config))
    results["silc_over_clip"] = results["silc_samples_per_s"] / results["hf_clip_samples_per_s"]
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--max_batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse(argv)
    if not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (this script measures a GPU; run it on one).")
        return {}
    torch.backends.cuda.matmul.allow_tf32 = True
    config = SilcConfig.silc_b16()
    start = time.time()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["matmul_peak_tflops_bf16"] = matmul_peak_tflops()
    results["bf16_vs_float32"] = precision_check(config)
    results["attention"] = attention_check(config)
    results["training"] = training_check(config, args.max_batch, args.steps, results["matmul_peak_tflops_bf16"])
    results["inference"] = inference_check(config, args.steps)
    results["seconds"] = time.time() - start
    write_results(args.results, results)

    train, inference, attention = results["training"], results["inference"], results["attention"]
    print(
        f"{results['device']}, torch {results['torch']}: "
        f"bf16 matmul peak {results['matmul_peak_tflops_bf16']:.0f} TFLOP/s\n"
    )
    print("| check | result |\n|---|---|")
    for key, value in results["bf16_vs_float32"].items():
        print(f"| bf16 vs float32, {key} (relative) | {value:.2e} |")
    if attention.get("flash_available"):
        print(f"| flash vs math attention, min cosine | {attention['min_cosine_flash_vs_math']:.5f} |")
    else:
        print(f"| flash attention | not available: {attention.get('reason', '')} |")
    if "error" in train:
        print(f"| training | {train['error']} |")
    else:
        print(f"| training batch (largest that fits) | {train['batch']} |")
        print(f"| step time | {train['step_s'] * 1000:.0f} ms |")
        print(f"| samples/s | {train['samples_per_s']:.0f} |")
        print(f"| MFU ({train['gflop_per_image']:.0f} GFLOP per sample) | {100 * train['mfu']:.1f} % |")
        print(f"| peak memory | {train['peak_memory_gib']:.1f} GiB |")
    print(
        f"| inference samples/s, SILC / HF CLIP | {inference['silc_samples_per_s']:.0f} / "
        f"{inference['hf_clip_samples_per_s']:.0f} ({inference['silc_over_clip']:.2f}x) |"
    )
    print(f"\n{results['seconds']:.0f} s; JSON: {args.results}")
    return results


if __name__ == "__main__":
    run_script(main)
