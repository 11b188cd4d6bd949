"""A non-finite step is dropped by the trainer's own guard, for every trainer kind.

Each kind's step function (as its loop builds it) goes through the session's poisoned program
(session.jit_step(poison=True), the one a GRANITE_FAULT_NAN_STEPS step runs): the hook only makes
the embedded batch NaN and restores nothing, so params and optimizer state after the poisoned step
equal those before it bitwise only if the step itself discards the update (train/step.py,
rl/step.py, train/guards.apply_if_finite for the reward model). The same program with factor 1
must change both: the comparison can see an update."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import phase2
from granite_jax.model import Granite, preset
from granite_jax.optim import make_optimizer
from granite_jax.rl import step as rl_step
from granite_jax.rl.reward_model import init_rm_params
from granite_jax.rl.reward_model_train import rm_step
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import session
from granite_jax.train import state as state_lib
from granite_jax.train import step as step_lib
from granite_jax.train.state import TrainState

CFG = preset("tiny", vocab_size=128, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
B, T = 4, 16
LOSS_KW = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.05, agg="token-mean", dual_clip=None)


def _tx():
  """The trainers' optimizer (clip + AdamW with masked weight decay), at a constant rate."""
  o = phase2.get_config("tiny").optim
  o.update(schedule="constant", warmup_steps=0, weight_decay=0.1)
  return make_optimizer(o, total_steps=10, tokens_per_step=B * T)


def _batch(kind, rng):
  tokens = rng.integers(1, CFG.vocab_size, (B, T)).astype(np.int32)
  seg = np.ones((B, T), np.int32)
  pos = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy()
  b = dict(tokens=tokens, segment_ids=seg, positions=pos)
  if kind == "sft":
    b["loss_mask"] = (np.arange(T) >= T // 2).astype(np.int32)[None].repeat(B, 0)  # assistant half
  if kind == "rl":
    mask = np.zeros((B, T), np.float32)
    mask[:, T // 2:T - 1] = 1
    b.update(mask=mask, advantages=rng.normal(0, 1, B).astype(np.float32),
             old_logp=np.float32(-4.8) * mask, ref_logp=np.float32(-4.9) * mask)
  return b


def _setup(kind):
  """(step_fn as the kind's loop builds it, fresh state)."""
  tx, schedule = _tx()
  key = jax.random.PRNGKey(0)
  if kind in ("pretrain", "sft"):  # train/loop.py
    fn = functools.partial(step_lib.train_step, model=Granite(CFG), tx=tx, schedule=schedule)
    params = state_lib.init_params(CFG, key)
  elif kind == "rl":  # rl/loop.py
    fn = functools.partial(rl_step.rl_train_step, model=Granite(CFG), tx=tx, schedule=schedule,
                           loss_kw=dict(LOSS_KW))
    params = state_lib.init_params(CFG, key)
  else:  # rl/reward_model_train.py
    fn = functools.partial(rm_step, cfg=CFG, tx=tx, schedule=schedule)
    params = init_rm_params(CFG, key)
    params["head"]["w"] = params["head"]["w"] + 0.1  # a zero head gives the backbone no gradient
  return fn, TrainState(step=np.int32(0), params=params, opt_state=tx.init(params))


def _bitwise_equal(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _same(x, y) -> bool:
  """Every leaf equal bit for bit (NaN == NaN would not do: a NaN update must not pass)."""
  lx, ty = jax.tree.flatten(x)
  ly, tz = jax.tree.flatten(y)
  return ty == tz and all(_bitwise_equal(a, b) for a, b in zip(lx, ly))


@pytest.mark.parametrize("kind", ["pretrain", "sft", "rl", "reward_model"])
def test_poisoned_step_leaves_params_and_optimizer_state_bitwise(kind):
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  rep = NamedSharding(mesh, P())  # one device: every leaf replicated
  step_fn, state = _setup(kind)
  fn = session.jit_step(step_fn, mesh, rep, rep, poison=True)
  rng = np.random.default_rng(0)
  one, nan = np.float32(1.0), np.float32(np.nan)
  state, m = fn(jax.device_put(state, rep), _batch(kind, rng), one)  # non-zero Adam moments first
  assert int(m["skipped"]) == 0 and np.isfinite(float(m["loss"]))
  before = jax.device_get(state)  # host copies: the step donates its input

  batch = _batch(kind, rng)
  after, m = fn(jax.device_put(before, rep), batch, nan)
  after, m = jax.device_get((after, m))
  assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"])), m  # the hook did poison it
  assert int(after.step) == int(before.step) + 1
  kept = dict(params=_same(after.params, before.params), opt_state=_same(after.opt_state, before.opt_state))
  assert all(kept.values()), f"a non-finite update reached the state: {kept}"

  moved, m = jax.device_get(fn(jax.device_put(before, rep), batch, one))  # same batch, not poisoned
  assert int(m["skipped"]) == 0
  assert not (_same(moved.params, before.params) or _same(moved.opt_state, before.opt_state))
