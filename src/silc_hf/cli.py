"""Command-line plumbing shared by the package's scripts."""

import argparse


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
