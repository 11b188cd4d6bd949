"""The model a checkpoint holds, and the rule that a stage started from it keeps that model.

Every checkpoint this project writes has a `model_config.json` (ModelConfig.to_dict()) beside
it: a run writes WORKDIR/model_config.json next to WORKDIR/ckpt, a merge writes
merged/model_config.json next to merged/ckpt, an HF import writes CKPT_DIR/model_config.json.
A stage that starts from one (`init_from`, `rl.ref_from`) must build the same network: the
fields in NETWORK_FIELDS must equal the checkpoint's, unless the stage lists the field in
`model_changes` (long-context extension raises `rope_theta` and `max_seq_len` on purpose).
Shapes alone are not enough: a post-LCE checkpoint run at the pretraining RoPE theta loads
without complaint and silently computes a different function.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Mapping, Sequence

from granite_jax.ckpt.run_dir import check_not_hf_folder, read_json

FILE = "model_config.json"


@functools.lru_cache(maxsize=None)
def _warn_once(msg: str) -> None:  # the config is validated at start and again when the run builds
  print(msg, file=sys.stderr)

# Fields that define the function the parameters compute. dtype, attention_impl, loss_chunk,
# remat_policy, attention_block and init_std change how it is computed or trained, not what.
NETWORK_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                  "tie_embeddings", "max_seq_len", "rope_theta", "position_embedding", "rms_eps",
                  "embedding_multiplier", "attention_multiplier", "residual_multiplier",
                  "logits_scaling")


def find(ckpt: str) -> str | None:
  """model_config.json of a checkpoint dir (in it or in its parent, the run's workdir)."""
  ckpt = os.path.abspath(os.path.expanduser(ckpt))
  for d in (ckpt, os.path.dirname(ckpt)):
    path = os.path.join(d, FILE)
    if os.path.isfile(path):
      return path
  return None


def read(ckpt: str) -> tuple[str, dict[str, Any]] | None:
  path = find(ckpt)
  if path is None:
    return None
  with open(path) as f:
    try:
      return path, json.load(f)
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return float(a) == float(b)
  return a == b


def differences(theirs: Mapping[str, Any], ours: Mapping[str, Any],
                declared: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
  """{field: (checkpoint's value, config's value)} for network fields that differ undeclared."""
  return {k: (theirs[k], ours.get(k)) for k in NETWORK_FIELDS
          if k in theirs and k not in declared and not _same(theirs[k], ours.get(k))}


def declared_fields(value: str | Sequence[str] | None) -> tuple[str, ...]:
  """config `model_changes`: "rope_theta,max_seq_len" (CLI-friendly) or a sequence of names."""
  if not value:
    return ()
  names = value.split(",") if isinstance(value, str) else list(value)
  return tuple(n.strip() for n in names if n.strip())


def check_inherits(ckpt: str, model: Mapping[str, Any], declared: Sequence[str] = (),
                   what: str = "init_from") -> dict[str, Any] | None:
  """Raises ValueError naming each network field where `model` differs from the checkpoint's.

  `model` is the stage's model config (a dict), `declared` the fields the stage changes on
  purpose (config `model_changes`), `what` the config field that named `ckpt`. Returns the
  checkpoint's model config, or None (with a warning) when the directory has none.
  """
  declared = declared_fields(declared)
  unknown = sorted(set(declared) - set(NETWORK_FIELDS))
  if unknown:
    raise ValueError(f"model_changes={','.join(declared)!r}: {unknown} are not network fields; "
                     f"choose from {list(NETWORK_FIELDS)}")
  got = read(ckpt)
  if got is None:
    hf = os.path.join(ckpt, "config.json")
    if os.path.isfile(hf) and "model_type" in (read_json(hf, "Hugging Face config") or {}):
      check_not_hf_folder(ckpt)  # an HF folder passed where a checkpoint belongs: say so, not "no step"
    _warn_once(f"granite_jax: warning: {what}={ckpt!r} has no {FILE} (here or in its parent); "
               "only tensor shapes are checked when it loads")
    return None
  path, theirs = got
  diff = differences(theirs, model, declared)
  if diff:
    fix = " ".join(f"--config.model.{k}={a}" for k, (a, _) in diff.items())
    raise ValueError(
        f"{what}={ckpt!r} holds another model ({path}): "
        + ", ".join(f"model.{k}={a!r} in the checkpoint vs {b!r} in the config" for k, (a, b) in diff.items())
        + f". Run the checkpoint's model ({fix}), or, if this stage changes it on purpose, "
        f"list the field in model_changes (e.g. --config.model_changes='{','.join(diff)}')")
  return theirs
