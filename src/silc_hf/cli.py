"""Command-line plumbing shared by the package's scripts."""

import argparse
import math
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
    quota, which torch ignores (`docker --cpus 2` on a 64-core host would start 64 threads fighting over 2 CPUs:
    on this project's 2-core machine, 2 threads against one other busy job ran 11x slower than 1 thread)."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        quota = cpu_quota(cgroup_root)
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpus)))
    return torch.get_num_threads()


def run_script(main) -> None:
    """Run a script's `main()` after `set_cpu_threads()`. A user error (a missing path, a bad value, an unreachable
    Hub: `FileNotFoundError`, `ValueError`, `ConnectionError`) prints its message on one line and exits with status
    2, as argparse does, instead of a traceback; `SILC_DEBUG=1` shows the traceback."""
    set_cpu_threads()
    try:
        main()
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        if os.environ.get("SILC_DEBUG"):
            raise
        sys.stderr.write(f"error: {error}\n(SILC_DEBUG=1 shows the traceback)\n")
        raise SystemExit(2) from None
