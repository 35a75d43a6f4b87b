"""benchmarks/gpu_check.py on a machine without CUDA: it says so and exits cleanly, writing nothing."""

import torch

from conftest import load_script


def test_gpu_check_without_cuda_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = load_script("benchmarks/gpu_check.py")
    assert module.main(["--results", str(tmp_path / "gpu.json")]) == {}
    assert "No CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "gpu.json").exists()
