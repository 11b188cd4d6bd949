"""Which parameters get weight decay, decided by parameter path and rank.

Rule (path = the pytree key names joined with "/", lower-cased):
  * norm-like: path contains "norm" or "scale", or the array is 0-/1-D (norm
    scales and biases). Decayed only if optim.decay_norms.
  * embedding: path contains "embed". Decayed only if optim.decay_embeddings.
    A tied LM head is the embedding; an untied "lm_head" kernel is decayed.
  * everything else (matmul kernels, conv filters) is decayed.
Works on plain dicts and flax nnx.State (whose paths end in ".value").
"""

import jax


def _key_name(key):
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_path(path) -> str:
  return "/".join(_key_name(k) for k in path).lower()


def decays(path: str, ndim: int, *, decay_embeddings: bool, decay_norms: bool) -> bool:
  is_norm = "norm" in path or "scale" in path or ndim <= 1
  is_embed = "embed" in path
  return not (is_norm and not decay_norms) and not (is_embed and not decay_embeddings)


def weight_decay_mask(params, *, decay_embeddings=False, decay_norms=False):
  """Pytree of bools matching params: True where weight decay applies."""
  return jax.tree_util.tree_map_with_path(
    lambda p, x: decays(
      param_path(p), jax.numpy.ndim(x), decay_embeddings=decay_embeddings, decay_norms=decay_norms
    ),
    params,
  )
