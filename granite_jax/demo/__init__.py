"""The tiny demo pipeline: `python -m granite_jax.demo --workdir runs/demo` (see __main__.py)."""
