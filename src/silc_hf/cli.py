"""Command-line plumbing shared by the package's scripts."""

import argparse
import os
import sys


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` that accepts every long option as `--snake_case` and as `--kebab-case` (as
    transformers' `HfArgumentParser` does), so that no script refuses the other spelling."""

    def add_argument(self, *names, **kwargs):
        spellings = list(names)
        for name in names:
            if name.startswith("--"):
                body = name[2:]
                other = "--" + (body.replace("_", "-") if "_" in body else body.replace("-", "_"))
                if other not in spellings:
                    spellings.append(other)
        return super().add_argument(*spellings, **kwargs)


def read_config_file(path: str) -> dict:
    """The values of a `--config` file (JSON, or YAML for .yaml / .yml)."""
    import json

    with open(path) as file:
        if path.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(file)
        return json.load(file)


def apply_config_defaults(parser: argparse.ArgumentParser, path: str, values: dict, script: str) -> None:
    """Make a config file's `values` the parser's defaults (command-line arguments still override them);
    unknown keys raise, naming them."""
    unknown = sorted(set(values) - {action.dest for action in parser._actions})
    if unknown:
        raise ValueError(f"{path} has unknown keys {unknown}; see `python {script} --help`.")
    parser.set_defaults(**values)


def run_script(main) -> None:
    """Run a script's `main()`. A user error (a missing path, a bad value, an unreachable Hub: `FileNotFoundError`,
    `ValueError`, `ConnectionError`) prints its message on one line and exits with status 2, as argparse does,
    instead of a traceback; `SILC_DEBUG=1` shows the traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        if os.environ.get("SILC_DEBUG"):
            raise
        sys.stderr.write(f"error: {error}\n(SILC_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None
