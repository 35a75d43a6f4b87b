"""Command-line plumbing shared by every script: the package's `python -m` entry points, `training/` and
`benchmarks/`. One parser (`ArgumentParser`), one override grammar (`parse_overrides`), one way to set threads and
to report user errors (`run_script`)."""

import argparse
import dataclasses
import json
import math
import os
import sys

from transformers import HfArgumentParser


class ArgumentParser(HfArgumentParser):
    """The parser of every script: transformers' `HfArgumentParser` (arguments from dataclasses, plus any added with
    `add_argument`), and

    - every long option as `--snake_case` and as `--kebab-case`;
    - `--config FILE` (JSON, or YAML for .yaml / .yml): its values become the defaults and the command line overrides
      them; keys that name no argument raise, naming them;
    - `--help` lists the script's own arguments and names the ~200 inherited `TrainingArguments` fields only in a
      line (`--help-all` lists them in full).

    `parse(argv)` returns the dataclasses in the order given and, when the script added arguments of its own, a
    namespace of those last (just the namespace when there are no dataclasses). `config_file=False` leaves out
    `--config` (a command with subcommands, whose subparsers are of this class too).
    """

    def __init__(self, dataclass_types=(), config_file: bool = True, **kwargs):
        self._help_all = False
        super().__init__(dataclass_types, **kwargs)
        if config_file:
            self.add_argument(
                "--config", metavar="FILE", help="JSON or YAML file of these arguments; the command line overrides it"
            )

    def add_argument(self, *names, **kwargs):
        spellings = list(names)
        for name in names:
            if name.startswith("--"):
                body = name[2:]
                other = "--" + (body.replace("_", "-") if "_" in body else body.replace("-", "_"))
                if other not in spellings:
                    spellings.append(other)
        return super().add_argument(*spellings, **kwargs)

    def format_help(self) -> str:
        """With dataclass arguments: one line per argument (`--name (default ...): help`), the script's own arguments
        only; `--help-all` (or a parser without dataclasses): argparse's full help."""
        if self._help_all or not self.dataclass_types:
            return super().format_help()
        inherited = self._inherited_training_fields()
        lines = [f"usage: {self.prog} [--config FILE] [--ARGUMENT VALUE ...]", "", self.description or "", ""]
        own = [a for a in self._actions if a.option_strings and a.dest != "help"]
        for action in own:  # arguments added by the script itself (--config first)
            if action.dest not in {f.name for t in self.dataclass_types for f in dataclasses.fields(t)}:
                lines.append(f"  {action.option_strings[0]} {action.metavar or ''}: {action.help or ''}")
        for dataclass_type in self.dataclass_types:
            title = (dataclass_type.__doc__ or dataclass_type.__name__).strip().split("\n")[0]
            lines += ["", f"{dataclass_type.__name__}: {title}"]
            for item in dataclasses.fields(dataclass_type):
                if item.name in inherited or item.name.startswith("_") or not item.init:
                    continue
                default = item.default
                if item.default_factory is not dataclasses.MISSING:
                    default = item.default_factory()
                default = None if default is dataclasses.MISSING else default
                lines.append(f"  --{item.name} (default {default!r}): {item.metadata.get('help', '')}")
        if inherited:
            lines += [
                "",
                "and every transformers TrainingArguments field (--output_dir, --max_steps, --learning_rate, --bf16,",
                "--torch_compile, --resume_from_checkpoint, --report_to, ...): --help-all lists them.",
            ]
        return "\n".join(lines) + "\n"

    def _inherited_training_fields(self) -> set[str]:
        """`TrainingArguments` fields that the script's own dataclasses do not redefine."""
        from transformers import TrainingArguments

        base = {f.name: f for f in dataclasses.fields(TrainingArguments)}
        inherited = set()
        for dataclass_type in self.dataclass_types:
            if issubclass(dataclass_type, TrainingArguments):
                own = {f.name for f in dataclasses.fields(dataclass_type) if base.get(f.name) is not f}
                inherited |= {name for name in base if name not in own}
        return inherited

    def parse(self, argv: list[str] | None = None):
        argv = list(sys.argv[1:] if argv is None else argv)
        if "--help-all" in argv or "--help_all" in argv:
            self._help_all = True
            argv = ["--help"]
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        config = pre.parse_known_args(argv)[0].config
        if config:
            self.apply_config_file(config)
        *outputs, unknown = self.parse_args_into_dataclasses(argv, return_remaining_strings=True)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        if outputs and isinstance(outputs[-1], argparse.Namespace):
            vars(outputs[-1]).pop("config", None)
            if not vars(outputs[-1]) and self.dataclass_types:  # nothing of the script's own beside the dataclasses
                outputs.pop()
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def apply_config_file(self, path: str) -> None:
        """Make a `--config` file's values the parser's defaults; unknown keys raise, naming them."""
        values = read_config_file(path)
        unknown = sorted(set(values) - {action.dest for action in self._actions})
        if unknown:
            raise ValueError(f"{path} has unknown keys {unknown}; see `{self.prog} --help`.")
        self.set_defaults(**values)


def read_config_file(path: str) -> dict:
    """The values of a `--config` file (JSON, or YAML for .yaml / .yml)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: no such file.")
    with open(path) as file:
        if path.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(file)
        return json.load(file)


def write_results(path: str | None, results) -> None:
    """Write a script's results as JSON to `path` (the `--results` flag), creating its folder; nothing if None."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as file:
            json.dump(results, file, indent=2)


def parse_overrides(items: list[str]) -> dict:
    """The scripts' override grammar: `field=value` items; a value is read as JSON when it parses as JSON (`3`, `0.5`,
    `true`, `[0.0, 0.2, 0.0]`, `null`) and as a string otherwise (`centering=sinkhorn`)."""
    overrides = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name:
            raise ValueError(
                f"{item!r} is not field=value; write e.g. distill_weight=0.5 or 'solarize_probs=[0, 0, 0]'."
            )
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text
    return overrides


def cpu_quota(cgroup_root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs a container's cgroup quota allows (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`);
    None without a quota."""
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup_root, quota_file)) as file:
                fields = file.read().split()
            if period_file:
                with open(os.path.join(cgroup_root, period_file)) as file:
                    fields.append(file.read().strip())
        except OSError:
            continue
        if fields[0] in ("max", "-1"):
            return None
        return int(fields[0]) / int(fields[1])
    return None


def set_cpu_threads(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Set torch's CPU threads for a script and return them. `OMP_NUM_THREADS`, when set, decides; otherwise
    torch's default (the machine's cores) is capped by the CPUs this process may run on and by a container's CPU
    quota, which torch ignores (`docker --cpus 2` on a 64-core host would start 64 threads fighting over 2 CPUs)."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        quota = cpu_quota(cgroup_root)
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpus)))
    return torch.get_num_threads()


class RunStopped(RuntimeError):
    """A run that stopped itself on purpose (e.g. too many non-finite training steps); the message says why and
    what to do."""


def run_script(main) -> None:
    """Run a script's `main()` after `set_cpu_threads()`. A user error (a missing path, a bad value, an unreachable
    Hub: `FileNotFoundError`, `ValueError`, `ConnectionError`) or a run that stopped itself (`RunStopped`) prints its
    message on one line and exits with status 2, as argparse does, instead of a traceback; `SILC_DEBUG=1` shows the
    traceback."""
    set_cpu_threads()
    try:
        main()
    except (FileNotFoundError, ValueError, ConnectionError, RunStopped) as error:
        if os.environ.get("SILC_DEBUG"):
            raise
        sys.stderr.write(f"error: {error}\n(SILC_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None
