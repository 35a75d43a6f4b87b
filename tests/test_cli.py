"""Every command-line entry point accepts both --snake_case and --kebab-case spellings."""

import pytest

from silc_hf.cli import ArgumentParser


def test_both_spellings_of_every_long_option_reach_the_same_destination():
    parser = ArgumentParser()
    parser.add_argument("--class_names")
    parser.add_argument("--output-dir")
    for argv in (["--class_names", "a,b", "--output-dir", "x"], ["--class-names", "a,b", "--output_dir", "x"]):
        args = parser.parse_args(argv)
        assert args.class_names == "a,b" and args.output_dir == "x"


@pytest.mark.parametrize(
    "module, argv",
    [
        ("silc_hf.synthetic", ["--output_dir", "{tmp}", "--train", "2", "--validation", "1", "--test", "1"]),
        ("silc_hf.synthetic", ["--output-dir", "{tmp}", "--image_size", "32", "--train", "2", "--validation", "1", "--test", "1"]),
    ],
)
def test_the_synthetic_cli_takes_both_spellings(module, argv, tmp_path):
    import importlib

    main = importlib.import_module(module).main
    main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert (tmp_path / "train" / "metadata.jsonl").exists()


def test_evaluate_silc_takes_class_names_in_both_spellings(monkeypatch):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("evaluate_silc", Path(__file__).resolve().parents[1] / "training" / "evaluate_silc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module.AutoModel, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(SystemExit("parsed")))
    for flag in ("--class_names", "--class-names"):
        with pytest.raises(SystemExit, match="parsed"):
            module.main(["--model", "m", "--data", "d", flag, "a,b"])
