"""The paired differences of `benchmarks/study_silc_vs_clip.py` against a hand computation."""

import pytest

from conftest import load_script

study = load_script("benchmarks/study_silc_vs_clip.py")


def record(name: str, seed: int, top1: float) -> dict:
    metrics = {}
    for task, metric in study.COLUMNS.values():
        metrics.setdefault(task, {})[metric] = 0.1
    metrics["classification"]["top1_accuracy"] = top1
    return {"name": name, "seed": seed, "metrics": metrics}


def test_pairs_compare_the_named_runs_on_their_shared_seeds():
    """silc − clip on seeds 0, 1, 2: differences 1, 2, 3 points, mean 2, sd 1, t(0.975, 2 dof) = 4.303, so the
    interval is 2 ± 4.303 / sqrt(3) = 2 ± 2.484. patch has seeds 0, 1 only: its pair with silc uses those two."""
    records = [record("clip", s, t) for s, t in ((0, 0.10), (1, 0.20), (2, 0.30))]
    records += [record("silc", s, t) for s, t in ((0, 0.11), (1, 0.22), (2, 0.33))]
    records += [record("patch", s, t) for s, t in ((0, 0.12), (1, 0.22))]
    table, intervals = study.paired(records, [("silc", "clip"), ("patch", "silc")])
    top1 = intervals["silc − clip"]["top-1"]
    assert top1["mean"] == pytest.approx(2.0)
    assert top1["high"] - top1["mean"] == pytest.approx(4.303 / 3**0.5, rel=1e-3)
    assert intervals["patch − silc"]["top-1"]["differences"] == pytest.approx([1.0, 0.0])
    assert intervals["patch − silc"]["top-1"]["seeds"] == [0, 1]
    assert "| silc − clip | 3 | +2.0 [-0.5, +4.5]" in table
    _, default = study.paired(records)  # every run against the first
    assert set(default) == {"silc − clip", "patch − clip"}


def test_a_pair_naming_an_absent_run_is_refused():
    records = [record("clip", 0, 0.1), record("silc", 0, 0.2)]
    with pytest.raises(ValueError, match=r"--pair names the run 'silc-patch', which is not among the variants"):
        study.paired(records, [("silc-patch", "silc")])
