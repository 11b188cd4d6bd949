import sys

from granite_jax.cli import run_main  # bad input: one line; --debug for the traceback
from granite_jax.plan.estimate import main

sys.exit(run_main("granite_jax.plan", main))
