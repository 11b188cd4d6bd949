"""make_optimizer: weight-decay mask, clipping, accumulation, validation,
checked against a hand-written NumPy AdamW."""

import jax
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from granite_jax.optim import default_optim_config, make_optimizer, weight_decay_mask

LR, WD, B1, B2, EPS = 1e-2, 0.1, 0.9, 0.95, 1e-8


def cfg(**kw):
  c = default_optim_config()
  c.update(
    dict(
      schedule="constant", peak_lr=LR, warmup_steps=0, weight_decay=WD, b1=B1, b2=B2, eps=EPS, clip_norm=0.0
    )
    | kw
  )
  return c


def make_params():
  r = np.random.default_rng(0)
  return {
    "embed": {"embedding": r.normal(size=(8, 4)).astype(np.float32)},
    "layers_0": {
      "attn_norm": {"scale": r.normal(size=(4,)).astype(np.float32)},
      "mlp": {
        "kernel": r.normal(size=(4, 6)).astype(np.float32),
        "bias": r.normal(size=(6,)).astype(np.float32),
      },
    },
    "lm_head": {"kernel": r.normal(size=(4, 8)).astype(np.float32)},
  }


def make_grads(params, scale=1.0, seed=1):
  r = np.random.default_rng(seed)
  return jax.tree.map(lambda p: (scale * r.normal(size=p.shape)).astype(np.float32), params)


def numpy_adamw(params, grads_seq, decay_mask, lr=LR, eps=EPS):
  """Reference AdamW (decoupled decay, bias-corrected moments); returns new params."""
  p = {k: np.array(v, np.float64) for k, v in params.items()}
  m = {k: 0.0 for k in p}
  v = {k: 0.0 for k in p}
  for t, g in enumerate(grads_seq, start=1):
    for k in p:
      m[k] = B1 * m[k] + (1 - B1) * g[k]
      v[k] = B2 * v[k] + (1 - B2) * g[k] ** 2
      mh, vh = m[k] / (1 - B1**t), v[k] / (1 - B2**t)
      p[k] = p[k] - lr * (mh / (np.sqrt(vh) + eps) + WD * decay_mask[k] * p[k])
  return p


def flat(tree):
  return {
    jax.tree_util.keystr(k): np.asarray(x, np.float64)
    for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def run(c, params, grads_seq):
  tx, _ = make_optimizer(c, total_steps=100, tokens_per_step=1)
  state = tx.init(params)
  for g in grads_seq:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return flat(params)


EXPECTED_DECAY = {
  "['embed']['embedding']": 0,
  "['layers_0']['attn_norm']['scale']": 0,
  "['layers_0']['mlp']['kernel']": 1,
  "['layers_0']['mlp']['bias']": 0,
  "['lm_head']['kernel']": 1,
}


def test_mask_rule():
  assert flat(weight_decay_mask(make_params())) == EXPECTED_DECAY
  everything = weight_decay_mask(make_params(), decay_embeddings=True, decay_norms=True)
  assert all(flat(everything).values())
  only_embed = flat(weight_decay_mask(make_params(), decay_embeddings=True))
  assert only_embed["['embed']['embedding']"] == 1
  assert only_embed["['layers_0']['attn_norm']['scale']"] == 0


@pytest.mark.parametrize("decay_embeddings,decay_norms", [(False, False), (True, True)])
def test_adamw_steps_match_numpy(decay_embeddings, decay_norms):
  params = make_params()
  grads = [make_grads(params, seed=s) for s in (1, 2)]
  got = run(cfg(decay_embeddings=decay_embeddings, decay_norms=decay_norms), params, grads)
  mask = {k: 1 if decay_embeddings else v for k, v in EXPECTED_DECAY.items()}
  want = numpy_adamw(flat(params), [flat(g) for g in grads], mask)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_clipping():
  # Large eps makes the Adam update depend on gradient magnitude, so clipping
  # is visible (with eps ~ 0 a first Adam step is ~sign(g), scale-free).
  params, eps, clip = make_params(), 1.0, 1.0
  g = make_grads(params, scale=1e3)
  gf = flat(g)
  norm = np.sqrt(sum((x**2).sum() for x in gf.values()))
  clipped = {k: x * clip / norm for k, x in gf.items()}
  got = run(cfg(eps=eps, clip_norm=clip), params, [g])
  want = numpy_adamw(flat(params), [clipped], EXPECTED_DECAY, eps=eps)
  unclipped = numpy_adamw(flat(params), [gf], EXPECTED_DECAY, eps=eps)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert not np.allclose(want["['lm_head']['kernel']"], unclipped["['lm_head']['kernel']"])
  # clip_norm=0 disables clipping.
  off = run(cfg(eps=eps, clip_norm=0.0), params, [g])
  for k in unclipped:
    np.testing.assert_allclose(off[k], unclipped[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_returns_the_schedule():
  _, sched = make_optimizer(cfg(warmup_steps=10), total_steps=100, tokens_per_step=1)
  assert float(sched(5)) == pytest.approx(LR / 2)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("peak_lr", -1.0, "optim.peak_lr=-1.0 must be > 0"),
    ("warmup_steps", -5, "optim.warmup_steps=-5 must be an integer >= 0"),
    ("warmup_steps", 1.5, "optim.warmup_steps=1.5 must be an integer >= 0"),
    ("weight_decay", -0.1, "optim.weight_decay=-0.1 must be >= 0"),
    ("b1", 1.0, r"optim.b1=1.0 must be in \[0, 1\)"),
    ("b2", -0.1, r"optim.b2=-0.1 must be in \[0, 1\)"),
    ("clip_norm", -1.0, "optim.clip_norm=-1.0 must be >= 0"),
    ("tokens_offset", -1.0, "optim.tokens_offset=-1.0 must be >= 0"),
    ("eps", 0.0, "optim.eps=0.0 must be > 0"),
    ("final_lr", 1.0, r"optim.final_lr=1.0 must be in \[0, peak_lr"),
  ],
)
def test_validation_errors(field, value, message):
  # A fresh ConfigDict: type-safe overrides would reject e.g. 1.5 for an int.
  c = ConfigDict(cfg().to_dict() | {field: value})
  with pytest.raises(ValueError, match=message):
    make_optimizer(c, total_steps=100, tokens_per_step=1)


def test_power_field_validation():
  with pytest.raises(ValueError, match="optim.power_b=0.5 must be < 0"):
    make_optimizer(cfg(schedule="power", power_b=0.5), total_steps=100, tokens_per_step=1)
