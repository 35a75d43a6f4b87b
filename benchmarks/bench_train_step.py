"""Benchmark: what SILC's distillation costs per training step, against a CLIP-only step on the same model.

    python benchmarks/bench_train_step.py                       # ViT-Ti/16 at 224 px, CPU
    python benchmarks/bench_train_step.py --preset b16 --device cuda --batch_size 64 --results out.json
    python benchmarks/bench_train_step.py --preset demo --batch_size 64 --num_local_crops 4 --local_crop_size 32 \
        --head_prototypes 128 --head_hidden_dim 256 --head_bottleneck_dim 64 --steps 10      # the demo's step

Prints (and writes as JSON): the CLIP-only step time (one global view per image + texts, fwd + bwd + AdamW),
the SILC step time (2 global + N local student views, teacher on the 2 global views, DINO head, EMA
update), their ratio next to the ratio predicted from FLOP counts (forward = 2 x parameters x tokens +
4 x layers x tokens^2 x width, backward = 2 x forward), the EMA update's share of the SILC step, the
batched photometric augmentation's share, the data workers' CPU time per image (decode + crops), and what the
non-finite guard costs (`silc_hf.training.trainer.step_is_finite`: the SILC step with it / without it, and the
guard's own time as a share of the step); then what the options of SILC's successors cost against the SILC step
(masked patch distillation, the head-only teacher, both: step-time ratios and the teacher's weights).
"""

import io
import statistics

import numpy as np
import torch
from PIL import Image

from silc_hf import SilcConfig, SilcModel
from silc_hf.demo.recipe import DEMO_MODEL
from silc_hf.tools.benchmark import mean_cpu_ms, step_flops, time_calls
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.arguments import MultiCropArguments
from silc_hf.training.augmentation import MultiCropTransform, apply_photometric
from silc_hf.training.data import SamplePreparer
from silc_hf.training.pretraining import SilcPretrainingModel
from silc_hf.training.trainer import step_is_finite

PRESETS = {
    "demo": DEMO_MODEL,  # the demo's towers (ViT 4x96 at 64 px, text 2x96)
    **{  # ViT towers at 224 px, both towers alike
        name: {"vision_config": dict(tower), "text_config": dict(tower, projection_dim=tower["hidden_size"])}
        for name, tower in (
            ("ti16", dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3)),
            ("s16", dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6)),
            ("b16", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)),
        )
    },
}


def predicted_ratio(config: SilcConfig, num_local: int, local_size: int, head_params: int) -> float:
    clip, silc = step_flops(config, num_local, local_size, head_params)
    return silc / clip


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="ti16")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_local_crops", type=int, default=8)
    parser.add_argument("--local_crop_size", type=int, default=96)
    parser.add_argument("--head_prototypes", type=int, default=65536)
    parser.add_argument("--head_hidden_dim", type=int, default=2048)
    parser.add_argument("--head_bottleneck_dim", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--results", help="also write the results as JSON here")
    args = parser.parse(argv)
    torch.manual_seed(0)
    device, batch, n_local = args.device, args.batch_size, args.num_local_crops

    config = SilcConfig(**PRESETS[args.preset])
    head = dict(head_hidden_dim=args.head_hidden_dim, head_bottleneck_dim=args.head_bottleneck_dim)
    wrapper = SilcPretrainingModel(SilcModel(config), head_num_prototypes=args.head_prototypes, **head)
    wrapper = wrapper.to(device).train()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    size, local = config.vision_config.image_size, args.local_crop_size
    crop_args = MultiCropArguments(num_local_crops=n_local, local_crop_size=local)
    transform = MultiCropTransform(crop_args, size)
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)) for _ in range(batch)]
    samples = [transform(photo, np.random.default_rng(i)) for i, photo in enumerate(photos)]
    batch_inputs = {
        "global_views": torch.stack([s["global_views"] for s in samples]).to(device),
        "local_views": torch.stack([s["local_views"] for s in samples]).to(device),
        "global_augment": {
            k: torch.stack([s["global_augment"][k] for s in samples]).to(device) for k in samples[0]["global_augment"]
        },
        "local_augment": {
            k: torch.stack([s["local_augment"][k] for s in samples]).to(device) for k in samples[0]["local_augment"]
        },
        "input_ids": torch.randint(2, 1000, (batch, config.text_config.max_position_embeddings), device=device),
    }
    batch_inputs["input_ids"][:, -1] = config.text_config.eos_token_id  # towers that pool at EOS need one
    one_view = dict(
        batch_inputs,
        global_views=batch_inputs["global_views"][:, :1],
        global_augment={k: v[:, :1] for k, v in batch_inputs["global_augment"].items()},
        local_views=None,
        local_augment=None,
    )

    def step(inputs, distill_weight, guard=False):
        with autocast:
            loss = wrapper(**inputs, distill_weight=distill_weight)["loss"]
        loss.backward()
        if not guard or step_is_finite(trainable, torch.isfinite(loss.detach())):  # as SilcTrainer decides
            optimizer.step()
            if distill_weight:
                wrapper.update_teacher(0.999)
                wrapper.distillation_loss.update_center()
        optimizer.zero_grad(set_to_none=True)

    def timed(fn, repeats: int) -> float:  # median seconds per call after the (timed, not counted) first call
        return time_calls(fn, repeats, device=device).median

    clip_time = timed(lambda: step(one_view, 0.0), args.steps)
    silc_time = timed(lambda: step(batch_inputs, 1.0), args.steps)
    # the step without and with the guard in alternation, in both orders: a shared machine's load drifts between two
    # separate series, and a step's time depends on the one before it
    ratios = []
    for index in range(args.steps):
        guarded_first = index % 2 == 1
        first = timed(lambda: step(batch_inputs, 1.0, guard=guarded_first), 1)
        second = timed(lambda: step(batch_inputs, 1.0, guard=not guarded_first), 1)
        ratios.append(first / second if guarded_first else second / first)
    guard_ratio = statistics.median(ratios)
    ema_time = timed(lambda: wrapper.update_teacher(0.999), args.steps * 3)
    wrapper(**batch_inputs)["loss"].backward()  # gradients for the guard's own timing
    guard_time = timed(lambda: step_is_finite(trainable, torch.ones((), dtype=torch.bool)), args.steps * 3)
    optimizer.zero_grad(set_to_none=True)
    flat = batch_inputs["local_views"].flatten(0, 1)
    flat_augment = {k: v.flatten(0, 1) for k, v in batch_inputs["local_augment"].items()}
    global_flat = batch_inputs["global_views"].flatten(0, 1)
    global_augment = {k: v.flatten(0, 1) for k, v in batch_inputs["global_augment"].items()}
    photometric_time = timed(lambda: apply_photometric(flat, flat_augment, [0.5] * 3, [0.5] * 3), args.steps) + timed(
        lambda: apply_photometric(global_flat, global_augment, [0.5] * 3, [0.5] * 3), args.steps
    )

    preparer = SamplePreparer(transform, min_image_size=1)
    encoded = []
    for photo in photos:
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    samples = [({"image": {"bytes": data, "path": None}, "text": "a photo"}, i) for i, data in enumerate(encoded)]
    data_ms = mean_cpu_ms(lambda sample: preparer(sample[0], np.random.default_rng(sample[1])), samples)

    # The options of SILC's successors, each a wrapper of its own on the same model: the masked patch loss (iBOT,
    # DINOv2's masks: one of the two global views of each image, 10-50 % of its patches), the head-only teacher
    # (TIPSv2), both. Steps in alternation, the median of each over the SILC step's.
    masks = MultiCropTransform(crop_args, size, config.vision_config.patch_size)
    masked_inputs = dict(
        batch_inputs,
        global_masks=torch.stack([masks.draw_masks(np.random.default_rng(i)) for i in range(batch)]).to(device),
    )
    variants = {
        "silc": (wrapper, optimizer, batch_inputs, {}),
    }
    for name, options in (
        ("patch", dict(patch_distillation=True)),
        ("head_only", dict(teacher_tower="student")),
        ("head_only_patch", dict(patch_distillation=True, teacher_tower="student")),
    ):
        variant = SilcPretrainingModel(wrapper.student, head_num_prototypes=args.head_prototypes, **head, **options)
        variant = variant.to(device).train()
        extra = {"patch_distill_weight": 1.0} if options.get("patch_distillation") else {}
        parameters = [p for p in variant.parameters() if p.requires_grad]
        variants[name] = (
            variant,
            torch.optim.AdamW(parameters, lr=1e-4),
            masked_inputs if extra else batch_inputs,
            extra,
        )

    def variant_step(name):
        model, variant_optimizer, inputs, extra = variants[name]
        with autocast:
            loss = model(**inputs, distill_weight=1.0, **extra)["loss"]
        loss.backward()
        variant_optimizer.step()
        model.update_teacher(0.999)
        model.distillation_loss.update_center()
        if extra:
            model.patch_distillation_loss.update_center()
        variant_optimizer.zero_grad(set_to_none=True)

    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name in variants:
            times[name].append(timed(lambda: variant_step(name), 1))
    option_ratio = {name: statistics.median(t) / statistics.median(times["silc"]) for name, t in times.items()}
    teacher_mb = {
        name: sum(p.numel() * p.element_size() for p in model.teacher.parameters()) / 2**20
        for name, (model, *_) in variants.items()
    }

    head_params = sum(p.numel() for p in wrapper.student_head.parameters())
    results = {
        "preset": args.preset,
        "device": device,
        "dtype": args.dtype,
        "batch_size": batch,
        "num_local_crops": n_local,
        "local_crop_size": local,
        "image_size": size,
        "clip_step_s": clip_time,
        "silc_step_s": silc_time,
        "measured_ratio": silc_time / clip_time,
        "predicted_ratio_flops": predicted_ratio(config, n_local, local, head_params),
        "ema_update_s": ema_time,
        "ema_share_of_silc_step": ema_time / silc_time,
        "photometric_s": photometric_time,
        "photometric_share_of_silc_step": photometric_time / silc_time,
        "data_worker_cpu_ms_per_image": data_ms,
        "guarded_over_unguarded_step": guard_ratio,
        "nonfinite_guard_s": guard_time,
        "nonfinite_guard_share_of_silc_step": guard_time / silc_time,
        "option_step_over_silc_step": option_ratio,
        "teacher_weights_mb": teacher_mb,
    }
    print(
        f"\nSILC vs CLIP-only training step: {args.preset}, batch {batch}, {n_local} local crops of {local} px, "
        f"{device}, {args.dtype}"
    )
    print(f"{'quantity':<40}{'value':>14}")
    rows = [
        ("CLIP-only step (s)", f"{clip_time:.3f}"),
        ("SILC step (s)", f"{silc_time:.3f}"),
        ("SILC / CLIP, measured", f"{results['measured_ratio']:.2f}x"),
        ("SILC / CLIP, predicted from FLOPs", f"{results['predicted_ratio_flops']:.2f}x"),
        ("EMA update (s)", f"{ema_time:.4f}"),
        ("EMA share of the SILC step", f"{100 * results['ema_share_of_silc_step']:.1f}%"),
        ("photometric augmentation share", f"{100 * results['photometric_share_of_silc_step']:.1f}%"),
        ("data worker CPU per image (ms)", f"{data_ms:.1f}"),
        ("SILC step with / without the non-finite guard", f"{guard_ratio:.3f}x"),
        ("non-finite guard alone (s)", f"{guard_time:.5f}"),
        ("  its share of the SILC step", f"{100 * results['nonfinite_guard_share_of_silc_step']:.2f}%"),
    ]
    rows += [(f"step / SILC step: {name}", f"{ratio:.2f}x") for name, ratio in option_ratio.items() if name != "silc"]
    rows += [(f"teacher weights (MB): {name}", f"{mb:.1f}") for name, mb in teacher_mb.items()]
    for name, value in rows:
        print(f"{name:<40}{value:>14}")
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
