"""Figures for the demo and the study: training curves with the teacher diagnostics and the evaluators' metrics,
metric-vs-step curves of several runs, and a segmentation gallery with a legend. Needs matplotlib
(`pip install "silc-hf[demo]"`).
"""

import numpy as np

from ..zero_shot.metrics import IMAGE_TO_TEXT_R1, SEGMENTATION_MIOU, SEGMENTATION_TOP_SHARE, ZERO_SHOT_TOP1

LOSSES = {"loss": "total", "contrastive_loss": "image-text", "distillation_loss": "distillation"}
DIAGNOSTICS = {
    "teacher_entropy_fraction": "teacher entropy / ln K (per sample; healthy: low)",
    "teacher_batch_entropy_fraction": "entropy of the batch-mean teacher / ln K (healthy: high)",
    "student_feature_cosine": "student bottleneck cosine between images (healthy: low)",
}
EVALUATIONS = {
    f"eval_{ZERO_SHOT_TOP1}": "zero-shot top-1",
    f"eval_{IMAGE_TO_TEXT_R1}": "image→text R@1",
    f"eval_{SEGMENTATION_MIOU}": "zero-shot segmentation mIoU",
    f"eval_{SEGMENTATION_TOP_SHARE}": "pixels given to the most-predicted name",
}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            'The plots need matplotlib: pip install "silc-hf[demo]" (or pip install matplotlib).'
        ) from error
    return plt


def series(log_history: list[dict], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged quantity."""
    points = [(entry["step"], entry[name]) for entry in log_history if name in entry]
    return [p[0] for p in points], [p[1] for p in points]


SKIPPED = {"nonfinite_steps": "optimizer steps skipped (non-finite)", "skipped_samples": "bad samples skipped"}
PRETRAINING_PANELS = (
    (LOSSES, "loss", "losses", None),
    (DIAGNOSTICS, "fraction / cosine", "teacher diagnostics", (0, 1.05)),
    (EVALUATIONS, "metric", "evaluation during training (validation split)", (0, 1.0)),
    (SKIPPED, "count (cumulative)", "what was skipped", None),
)


def plot_training(log_history: list[dict], path: str, title: str = "", panels=PRETRAINING_PANELS) -> None:
    """Panels of logged quantities against the optimizer step, each `(names, ylabel, title, ylim)`; by default
    the losses, the teacher diagnostics (see `silc_hf.training.losses.teacher_diagnostics`), the zero-shot metrics
    of the evaluators, and the skipped steps and samples. Evaluations (names starting with `eval_`) are drawn with
    markers."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(16 * len(panels) / 3, 4.2), squeeze=False)
    for axis, (names, ylabel, panel_title, ylim) in zip(axes[0], panels):
        for name, label in names.items():
            steps, values = series(log_history, name)
            if steps:
                marker = "o" if name.startswith("eval_") else None
                axis.plot(steps, values, marker=marker, markersize=3, label=label)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(ylabel)
        axis.set_title(panel_title)
        axis.grid(alpha=0.3)
        if ylim:
            axis.set_ylim(*ylim)
        if axis.lines:
            axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_metric_vs_step(runs: dict[str, list[list[dict]]], metric: str, path: str, ylabel: str = "") -> None:
    """One line per run name (mean over its seeds' log histories, shaded min-max band) of an evaluated metric."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, histories in runs.items():
        curves = [dict(zip(*series(history, metric))) for history in histories]
        steps = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
        if not steps:
            continue
        values = np.array([[curve[step] for step in steps] for curve in curves])
        line = axis.plot(steps, values.mean(axis=0), marker="o", markersize=3, label=f"{name} ({len(curves)} seeds)")
        axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line[0].get_color(), alpha=0.2)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(ylabel or metric)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def label_colors(count: int) -> np.ndarray:
    """`(count, 3)` uint8 colours for mask values 0..count-1: dark grey for 0 (no class), then matplotlib's
    qualitative tab20, tab20b and tab20c maps (60 colours, repeated beyond)."""
    plt = _pyplot()
    table = np.concatenate([plt.get_cmap(name).colors for name in ("tab20", "tab20b", "tab20c")])
    colors = [(0.25, 0.25, 0.25)] + [table[k % len(table)] for k in range(count - 1)]
    return (np.asarray(colors)[:, :3] * 255).round().astype(np.uint8)


def plot_segmentation_gallery(
    rows: list[tuple],
    class_names: list[str],
    path: str,
    titles=("image", "ground truth", "zero-shot"),
    colors: np.ndarray | None = None,
    captions: list[str] | None = None,
) -> None:
    """`rows` of (image, ground-truth mask, predicted masks...), one column per entry of `titles`; masks hold k for
    `class_names[k - 1]` and 0 for no class. Each row has a legend of the classes its masks show, so that the
    picture stays legible with many class names. `colors[k]` (default `label_colors`) is the RGB of mask value k;
    `captions[row]`, if given, is written under the row's image."""
    import textwrap

    plt = _pyplot()
    from matplotlib.patches import Patch

    colors = label_colors(len(class_names) + 1) if colors is None else colors
    columns = len(titles) + 1  # the last column holds the row's legend
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.2 * len(rows)), squeeze=False)
    for row, (image, *masks) in enumerate(rows):
        panels = [np.asarray(image)] + [colors[mask] for mask in masks]
        for column, (panel, title) in enumerate(zip(panels, titles)):
            axis = axes[row][column]
            axis.imshow(panel, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
        if captions is not None:
            axes[row][0].set_xlabel(textwrap.fill(captions[row], 30), fontsize=7)
        shown = sorted(set(np.unique(np.concatenate([np.ravel(mask) for mask in masks]))) - {0})
        legend = [Patch(color=colors[k] / 255, label=class_names[k - 1]) for k in shown]
        axes[row][-1].axis("off")
        axes[row][-1].legend(handles=legend, loc="center left", fontsize=8, frameon=False, ncol=1 + len(legend) // 8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
