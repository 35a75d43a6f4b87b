"""Which checkpoint a run resumes from (silc_hf.training.checkpoints), on hand-made folders."""

import json

import pytest
import torch
from safetensors.torch import save_file

from silc_hf.training.checkpoints import incomplete_reason, latest_complete_checkpoint, resolve_resume_checkpoint


def _checkpoint(root, step, state=True, weights=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights:
        save_file({"w": torch.ones(3)}, str(folder / "model.safetensors"))
        save_file({"teacher.w": torch.ones(3)}, str(folder / "distillation_state.safetensors"))
    return folder


def test_the_newest_complete_checkpoint_is_chosen_and_broken_ones_are_named(tmp_path, caplog):
    good = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 100)
    no_state = _checkpoint(tmp_path, 200, state=False)
    truncated = _checkpoint(tmp_path, 300)
    data = (truncated / "distillation_state.safetensors").read_bytes()
    (truncated / "distillation_state.safetensors").write_bytes(data[:-4])
    assert "trainer_state.json" in incomplete_reason(no_state)
    assert "unreadable weights distillation_state.safetensors" in incomplete_reason(truncated)
    assert incomplete_reason(good) is None
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-100")
    assert f"Skipping {truncated}" in caplog.text and f"Skipping {no_state}" in caplog.text
    assert latest_complete_checkpoint(str(tmp_path / "missing")) is None


def test_resume_resolution_explicit_latest_automatic_and_overwrite(tmp_path):
    _checkpoint(tmp_path, 4)
    newest = str(tmp_path / "checkpoint-4")
    assert resolve_resume_checkpoint(None, str(tmp_path), overwrite=False) == newest  # the same command again
    assert resolve_resume_checkpoint("latest", str(tmp_path), overwrite=False) == newest
    assert resolve_resume_checkpoint("latest", str(tmp_path / "empty"), overwrite=False) is None
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint='nowhere' is not a folder"):
        resolve_resume_checkpoint("nowhere", str(tmp_path), overwrite=False)
    with pytest.raises(ValueError, match="drop one of them"):
        resolve_resume_checkpoint("latest", str(tmp_path), overwrite=True)
    assert resolve_resume_checkpoint(None, str(tmp_path), overwrite=True) is None  # an explicit fresh start
    assert not (tmp_path / "checkpoint-4").exists()
