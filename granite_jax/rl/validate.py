"""RL config checks that are about the recipe, not the shapes: which model is the reference."""
from __future__ import annotations

from ml_collections import ConfigDict


def check_reference(c: ConfigDict) -> str:
  """The reference checkpoint to load ("" = the starting policy); raises when a real size has none.

  The reference of every RL stage is the SFT model. At real sizes it must be given
  (`rl.ref_from`): falling back to `init_from` would silently make a later stage's reference the
  previous RL stage. The tiny demo allows `rl.ref_from=""` = `init_from`, which is the SFT
  checkpoint for its first stage (the README passes `rl.ref_from` for the later ones).
  """
  ref_from = c.rl.get("ref_from", "") or ""
  if not ref_from and c.get("preset", "tiny") != "tiny":
    raise ValueError(f"rl.ref_from is not set: at preset {c.preset!r} the RL reference must be the SFT "
                     "checkpoint, e.g. --config.rl.ref_from=/ckpt/sft/ckpt")
  return ref_from or (c.get("init_from", "") or "")
