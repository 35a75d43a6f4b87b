"""The demo: a small SILC trained on the package's generated scenes on the CPU (`python -m silc_hf.demo`). Its recipe
(`silc_hf.demo.recipe`) is what the studies in `benchmarks/` start from."""

from .main import main

__all__ = ["main"]
