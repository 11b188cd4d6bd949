"""Packed vs padded RL batches through the real train step: the same loss, metrics and parameter
update for every aggregation (the sequence means tell a row's sequences apart by segment), with a
data-dependent number of micro-batches, and the log-prob pass on packed rows gives each token the
log-prob it has in its own padded row (no attention across sequences)."""
import jax
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from granite_jax.model import Granite, preset
from granite_jax.rl import rollout as R
from granite_jax.rl.loss import policy_loss
from granite_jax.rl.packing import first_fit_decreasing, placements
from granite_jax.rl.step import batch_fields, jit_logprobs, jit_rl_train_step, response_logprobs, rl_batch_shardings
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train import state as state_lib

CFG = preset("tiny", vocab_size=128, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
             init_std=0.3)
RL = dict(prompts_per_step=4, samples_per_prompt=4, max_prompt_len=12, max_response_len=12,
          overlong_filter=False, scale_by_std=True, pack_buckets=8, kl_coef=0.05, ppo_epochs=1)
GRAD_ACCUM = 4  # micro-batches of 4 rows: the padded batch takes 4, the packed one fewer
LOSS_KW = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.05, dual_clip=None)


def _samples():
  rng = np.random.default_rng(0)
  P, G, N = RL["prompts_per_step"], RL["samples_per_prompt"], 16
  tasks = [dict(prompt_ids=list(rng.integers(2, CFG.vocab_size, int(rng.integers(2, 7))))) for _ in range(P)]
  lengths = rng.integers(1, RL["max_response_len"] + 1, N)
  return dict(tokens=rng.integers(2, CFG.vocab_size, (N, RL["max_response_len"])).astype(np.int32),
              logprobs=-rng.uniform(3, 6, (N, RL["max_response_len"])).astype(np.float32), lengths=lengths,
              shaped=rng.normal(0, 1, N).astype(np.float32), truncated=np.zeros(N, bool), live=np.ones(N, bool),
              tasks=[t for t in tasks for _ in range(G)])


@pytest.fixture(scope="module")
def setup():
  mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx = optax.sgd(1.0)
  sh = state_lib.state_shardings(CFG, mesh, tx)
  s = _samples()
  batches = {pack: R.build_batch(s, ConfigDict(dict(RL, pack=pack)), grad_accum=GRAD_ACCUM)
             for pack in (False, True)}
  logp = jit_logprobs(CFG, mesh, sh.params)
  ref_params = state_lib.init_params(CFG, jax.random.PRNGKey(7))
  for b in batches.values():  # rollout.add_logprobs: the reference pass, on each layout's own rows
    R.add_logprobs(b, None, ref_params, logp_fn=logp, rl=ConfigDict(dict(RL)))
  return dict(mesh=mesh, tx=tx, sh=sh, samples=s, batches=batches)


def _where(s, T):
  """(row, first column) of each sequence in the packed layout, as build_batch places them."""
  lengths = np.array([len(t["prompt_ids"]) for t in s["tasks"]]) + s["lengths"]
  return placements(first_fit_decreasing(lengths, T), lengths), lengths


def test_reference_logprobs_on_packed_rows_match_padded(setup):
  pad, packed = setup["batches"][False], setup["batches"][True]
  T = pad["tokens"].shape[1]
  assert len(packed["tokens"]) < len(pad["tokens"]) and packed["segment_ids"].max() >= 2
  (row, start), lengths = _where(setup["samples"], T)
  for n, L in enumerate(lengths):
    m = pad["mask"][n, :L] > 0
    np.testing.assert_allclose(packed["ref_logp"][row[n], start[n]:start[n] + L][m], pad["ref_logp"][n, :L][m],
                               atol=2e-5, err_msg=f"sequence {n}")


def _update(setup, batch, agg):
  mesh, tx, sh = setup["mesh"], setup["tx"], setup["sh"]
  fields = batch_fields(ConfigDict(dict(RL)))
  assert set(fields) == set(batch)
  state = state_lib.make_init_fn(CFG, tx, sh)(jax.random.PRNGKey(0))
  before = jax.device_get(state.params)
  B = len(setup["batches"][False]["tokens"])
  fn = jit_rl_train_step(CFG, mesh, tx, optax.constant_schedule(1.0), sh, loss_kw=dict(LOSS_KW, agg=agg),
                         grad_accum=GRAD_ACCUM, micro_rows=B // GRAD_ACCUM, fields=fields)
  new, m = fn(state, jax.device_put(batch, rl_batch_shardings(mesh, fields)))
  return jax.tree.map(lambda a, b: a - b, before, jax.device_get(new.params)), jax.device_get(m)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_packed_step_equals_padded_step(setup, agg):
  g_pad, m_pad = _update(setup, setup["batches"][False], agg)
  g, m = _update(setup, setup["batches"][True], agg)
  for k in ("loss", "pg_loss", "kl", "entropy", "logp_diff", "n_tokens", "grad_norm"):
    np.testing.assert_allclose(m[k], m_pad[k], rtol=2e-5, atol=1e-7, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=2e-4), g, g_pad)
  assert m["skipped"] == 0 and m["grad_norm"] > 1e-3


def test_every_aggregation_same_loss_packed_or_padded(setup):
  """policy_loss over one forward of each layout (the sequence sums by segment id)."""
  params = state_lib.init_params(CFG, jax.random.PRNGKey(0))
  got = {}
  for pack, b in setup["batches"].items():
    logp, _ = jax.jit(lambda p, x: response_logprobs(p, x, Granite(CFG)))(params, b)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
      got[pack, agg] = float(policy_loss(logp, logp, b["ref_logp"], b["advantages"], b["mask"], agg=agg,
                                         seq_ids_BT=b["segment_ids"], **LOSS_KW)[0])
  for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
    np.testing.assert_allclose(got[True, agg], got[False, agg], rtol=2e-5, err_msg=agg)
  assert len({round(got[False, a], 6) for a in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")}) == 3
