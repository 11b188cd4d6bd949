"""Phase 5b: 32K -> 128K on the phase-4 mixture (`--config.init_from=` the 32K stage's merged checkpoint)."""
from configs.lce_32k import lce_config


def get_config(arg: str | None = None):
  return lce_config("lce_128k", arg)
