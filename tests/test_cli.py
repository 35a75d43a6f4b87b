"""One convention for every script: the shared parser (both spellings, --config, --help), `main(argv=None)`,
`run_script`, and no `sys.path` edits."""

import ast
import json
from pathlib import Path

import pytest

from silc_hf.tools.cli import ArgumentParser, parse_overrides
from silc_hf.training import SilcDataArguments

from conftest import REPOSITORY, load_script

SCRIPTS = sorted(
    str(path.relative_to(REPOSITORY))
    for folder in ("training", "benchmarks", "examples")
    for path in (REPOSITORY / folder).glob("*.py")
)
ENTRY_POINTS = ["silc_hf.demo.main", "silc_hf.data.scenes", "silc_hf.tools.model_card", "silc_hf.convert.__main__"]


def test_both_spellings_of_every_long_option_reach_the_same_destination():
    parser = ArgumentParser()
    parser.add_argument("--class_names")
    parser.add_argument("--output-dir")
    for argv in (["--class_names", "a,b", "--output-dir", "x"], ["--class-names", "a,b", "--output_dir", "x"]):
        args = parser.parse(argv)
        assert args.class_names == "a,b" and args.output_dir == "x"


def test_config_file_values_are_defaults_the_command_line_overrides_and_unknown_keys_are_named(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"train_data": "a", "image_column": "jpg"}))
    parser = ArgumentParser(SilcDataArguments)
    args = parser.parse(["--config", str(config), "--image-column", "png"])
    assert (args.train_data, args.image_column) == ("a", "png")
    config.write_text(json.dumps({"train_dat": "a"}))
    with pytest.raises(ValueError, match=r"unknown keys \['train_dat'\]"):
        ArgumentParser(SilcDataArguments).parse(["--config", str(config)])
    with pytest.raises(SystemExit):  # argparse's one-line error, as for any unknown option
        ArgumentParser(SilcDataArguments).parse(["--no_such_option", "a"])


def test_the_override_grammar_reads_json_values_and_names_a_bad_item():
    overrides = parse_overrides(["distill_weight=0.5", "centering=sinkhorn", "solarize_probs=[0, 0.2, 0]", "x=true"])
    assert overrides == {"distill_weight": 0.5, "centering": "sinkhorn", "solarize_probs": [0, 0.2, 0], "x": True}
    with pytest.raises(ValueError, match="'distill_weight' is not field=value"):
        parse_overrides(["distill_weight"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_follows_the_convention(script):
    tree = ast.parse((REPOSITORY / script).read_text())
    mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert mains and [a.arg for a in mains[0].args.args] == ["argv"], "main(argv=None)"
    assert mains[0].args.defaults and mains[0].args.defaults[0].value is None, "main(argv=None)"
    guard = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert guard and ast.unparse(guard[0].body[0]) == "run_script(main)", "threads and errors through run_script"
    source = ast.unparse(tree)
    for banned in ("sys.path", "argparse.ArgumentParser(", "HfArgumentParser("):
        assert banned not in source, banned
    assert "ArgumentParser(" in source  # the shared one, from silc_hf.tools.cli


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_with_config_listed(script, capsys):
    module = load_script(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("module_name", ENTRY_POINTS)
def test_the_package_entry_points_use_the_shared_parser(module_name):
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    source = Path(module.__file__).read_text()
    assert "from ..tools.cli import" in source or "from .cli import" in source
    assert "argparse.ArgumentParser(" not in source and "sys.path" not in source
    assert list(inspect.signature(module.main).parameters) == ["argv"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--output_dir", "{tmp}", "--train", "2", "--validation", "1", "--test", "1"],
        ["--output-dir", "{tmp}", "--image_size", "32", "--train", "2", "--validation", "1", "--test", "1"],
    ],
)
def test_the_scenes_cli_takes_both_spellings(argv, tmp_path):
    from silc_hf.data.scenes import main

    main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert (tmp_path / "train" / "metadata.jsonl").exists()


def test_evaluate_silc_takes_class_names_in_both_spellings(monkeypatch):
    module = load_script("training/evaluate_silc.py")
    monkeypatch.setattr(
        module.AutoModel, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(SystemExit("parsed"))
    )
    for flag in ("--class_names", "--class-names"):
        with pytest.raises(SystemExit, match="parsed"):
            module.main(["--model", "m", "--data", "d", flag, "a,b"])
