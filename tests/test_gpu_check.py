"""benchmarks/gpu_check.py on a machine without CUDA: it says so and exits cleanly, writing nothing."""

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--output", str(tmp_path / "gpu.json")]) == {}
    assert "No CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "gpu.json").exists()
