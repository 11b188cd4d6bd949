"""Phase 5c: 128K -> 512K on 80% books + 20% code repositories; 8B and 30B only (as in the report)."""
from configs.lce_32k import lce_config


def get_config(arg: str | None = None):
  if arg == "3b":
    raise ValueError("lce_512k is not part of the 3B recipe (the report extends 3B to 128K only); "
                     "use configs/lce_128k.py:3b as its last long-context stage")
  c = lce_config("lce_512k", arg)
  c.data.mixture = dict(books=80, code_repos=20)
  return c
