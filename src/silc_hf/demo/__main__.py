"""`python -m silc_hf.demo`: see `silc_hf.demo.main`."""

from ..tools.cli import run_script
from .main import main

run_script(main)
