"""The one entry point: `python launch/run.py --config=configs/phase2.py[:8b] [--workdir=DIR]`.

Every config field can be overridden: `--config.train.steps=100 --config.optim.peak_lr=3e-4`.
"""
import os
import sys

# Configs import `configs.base`; make the repo root importable however we are started.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(_ROOT, "configs", "phase2.py"),
                                          "Recipe stage config file, optionally ':<preset>'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config name>).")
EXIT_NONFINITE = 3  # the non-finite guard stopped the run (no checkpoint of that state)
EXIT_SAVE_FAILED = 4  # a checkpoint save failed (older steps intact)
_DEBUG = False  # set from --debug in __main__
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate, build the real mesh from fake CPU devices and "
                             "compile every program of the stage from abstract inputs; print memory per GPU "
                             "(granite_jax/plan/dry_run.py). Nothing is allocated or read.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console readable
    logging.set_verbosity(logging.WARNING)
  if _DRY_RUN.value:  # before JAX's backend starts: fake CPU devices for the whole mesh
    from granite_jax.plan import dry_run, stages
    try:
      config = dry_run.laid_out(_CONFIG.value)  # no explicit mesh: the stage's configs/gb200.py layout
    except ValueError as e:
      sys.exit(f"granite_jax: invalid config: {e}")
    dry_run.prepare_devices(stages.devices(dry_run.one_rack(config)))
    sys.exit(dry_run.dry_run(config))
  import jax

  from granite_jax.train.loop import run
  from granite_jax.train.validate import validate

  config = _CONFIG.value
  if config.train.deterministic_gpu:  # must be set before the GPU backend starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
  from granite_jax.sharding import distributed, xla_profile
  try:  # XLA profile, then jax.distributed: both before any backend exists
    xla_cfg = config.get("xla") or xla_profile.default_config()
    applied = xla_profile.apply(xla_cfg)
    dist = distributed.initialize(config.get("distributed") or distributed.default_config())
  except ValueError as e:
    sys.exit(f"granite_jax: invalid config: {e}")
  if jax.process_index() == 0:
    print(f"granite_jax | {xla_profile.describe(xla_cfg, applied)}"
          + (f" | distributed {dist.describe()}" if dist else ""), flush=True)
    if config.get("gb200"):  # the layout, and any change it made to the recipe's batch
      from configs import gb200
      print(f"granite_jax | {gb200.describe(config)}", flush=True)
  try:  # bad input: one line naming the field, not a traceback
    validate(config, jax.device_count(), jax.process_count())
    if config.mesh.get("dcn_shape"):
      from granite_jax.sharding.mesh import make_hybrid_mesh
      make_hybrid_mesh(config.mesh.shape, config.mesh.dcn_shape, config.mesh.axes)  # checks the split
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"granite_jax: invalid config: {e}")
  workdir = _WORKDIR.value or os.path.join("runs", config.name if config.preset == "tiny"
                                           else f"{config.name}_{config.preset}")
  if config.get("rl"):  # RL stages (configs/rl_*.py, rlhf.py)
    from granite_jax.rl.loop import run_rl as run
  elif config.get("reward_model"):  # configs/reward_model.py
    from granite_jax.rl.reward_model_train import run_reward_model as run
  from granite_jax.ckpt.manager import CheckpointError
  from granite_jax.train.guards import NonFiniteError
  try:
    run(config, workdir)
  except (NonFiniteError, CheckpointError) as e:  # a known stopping state, not a bug: one line
    if _DEBUG:
      raise
    from granite_jax import cli
    cli.fail("granite_jax", e, EXIT_NONFINITE if isinstance(e, NonFiniteError) else EXIT_SAVE_FAILED)


def _parse_flags(argv):
  """absl's parser, with a bad flag or config file reported as one line (not usage + FATAL)."""
  from granite_jax import cli
  spec = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
  path = spec.split(":")[0] if spec else None
  if path and not os.path.isfile(path):
    cli.fail("granite_jax", f"--config={spec}: no such file")
  if path and os.path.getsize(path) == 0:
    cli.fail("granite_jax", f"--config={spec}: empty file (a config file defines get_config())")
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, *cli.BAD_INPUT) as e:  # AttributeError: no get_config()
    if _DEBUG:
      raise
    cli.fail("granite_jax", f"--config={spec}: {cli.one_line(e)}" if spec and isinstance(e, AttributeError)
             else e)


if __name__ == "__main__":
  from granite_jax import cli
  _DEBUG = cli.pop_debug(sys.argv)  # --debug: tracebacks instead of one-line errors
  app.run(lambda argv: cli.run_main("granite_jax", lambda _: main(argv), [], debug=_DEBUG),
          flags_parser=_parse_flags)
