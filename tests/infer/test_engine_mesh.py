"""The fast engine on a mesh, in the RL rollout layout (infer/engine.py `Engine(mesh=, rollout_axes=)`),
against the single-device engine on 8 fake CPU devices (tests/conftest.py).

Greedy and sampled tokens equal, log-probs within 1e-5, with per-row budgets and a stop id that
end rows at different steps (compaction per data shard), a prompt batch the data axis does not
divide (padded), the weights split over the rollout axes, and decode chunks whose only
collectives are the tensor-parallel all-reduces and the logits' gather (no weight or KV gathers):
the first batch's (rows in step, the group layout) and, with `max_rows`, the refilled batch's
(rows of different ages in the per-row layout), whose outputs equal the engine's without it.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from granite_jax.infer import engine as E
from granite_jax.infer.engine import Engine
from granite_jax.infer.sampler import left_pad, make_sampler
from granite_jax.model import preset
from granite_jax.model.params import init_params
from granite_jax.sharding.jit import mesh_context
from granite_jax.sharding.mesh import make_mesh
from granite_jax.train.state import param_shardings

# 8 query / 4 KV heads, MLP 48, vocabulary 64: 4 tensor-parallel ways keep whole KV heads.
# init_std 0.3: continuations that change token to token.
CFG = preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=8, n_kv_heads=4, head_dim=8,
             d_ff=48, embedding_multiplier=1.0, attention_multiplier=0.2, residual_multiplier=0.7,
             logits_scaling=0.5, rope_theta=500.0, init_std=0.3)
PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 7, 30], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [3, 3],
           [8, 1, 4], [60, 2, 9, 9, 13]]  # 6 prompts: data=4 pads them to 8
G, N_NEW = 2, 12
KW = dict(max_new_tokens=N_NEW, samples_per_prompt=G, chunk=4, length_bucket=4)
BUDGETS = np.array([12, 3, 12, 12, 12, 9, 0, 12, 5, 12, 12, 2], np.int32)  # per row (request)
STOP = 4  # greedy: rows 2-5 and 10-11 stop on it at different steps
MODES = {"greedy": (0.0, 1.0, 0), "sample": (1.0, 1.0, 0), "filter": (0.8, 0.9, 8)}
MESHES = [((2, 4, 1), ("fsdp", "tensor")),  # the GB200 RL layout's kind: data x 4 tensor ways
          ((4, 2, 1), ("fsdp",))]


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


def _run(eng, params, mode):
  padded, lens = left_pad(PROMPTS)
  return eng(params, padded, lens, jax.random.PRNGKey(3), *MODES[mode], BUDGETS)


@pytest.fixture(scope="module")
def single(params):
  eng = Engine(CFG, **KW, stop_ids=(STOP,))
  return {m: jax.tree.map(np.asarray, jax.device_get(_run(eng, params, m))) for m in MODES}


@pytest.fixture(scope="module", params=MESHES, ids=lambda m: f"{m[0]}-{'+'.join(m[1])}")
def on_mesh(request, params):
  shape, axes = request.param
  mesh = make_mesh(shape, devices=jax.devices()[:8])
  train = param_shardings(CFG, mesh)
  mk = lambda **kw: Engine(CFG, **KW, stop_ids=(STOP,), mesh=mesh, rollout_axes=axes, param_shardings=train,
                           **kw)
  # max_rows=4: one prompt (G rows) per data shard at a time, the rest wait for finished rows.
  return mk(), jax.device_put(params, train), mk(max_rows=4)  # the trainer's FSDP layout


@pytest.mark.parametrize("mode", list(MODES))
def test_mesh_engine_equals_the_single_device_engine(on_mesh, single, mode):
  eng, sharded, _ = on_mesh
  want = single[mode]
  if mode == "greedy":  # the case is a real one: stops, budgets and full rows all occur
    n = want["lengths"]
    np.testing.assert_array_equal(n, [12, 3, 6, 6, 11, 9, 0, 12, 5, 12, 8, 2])
  keeps = []
  compact = E._compact

  def spy(lay, state, gen, prompt, keep, G):
    keeps.append(keep.shape)
    return compact(lay, state, gen, prompt, keep, G)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(E, "_compact", spy)
    out = _run(eng, sharded, mode)
  if mode == "greedy":  # each data shard compacted to its live rows ([D, power of two])
    assert keeps and all(k[0] == eng.lay.D and k[1] & (k[1] - 1) == 0 for k in keeps), keeps
  if len(PROMPTS) % eng.lay.D == 0:
    assert out["tokens"].sharding.spec[0] == "data"  # rows stay over the data axis
  got = jax.tree.map(np.asarray, jax.device_get(out))
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_array_equal(got["lengths"], want["lengths"])
  np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-5)


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_refilled_rows_on_a_mesh_equal_the_single_device_engine(on_mesh, single, mode):
  _, sharded, queued = on_mesh
  admits = []
  admit = E._admit

  def spy(sp, state, prompt, logits, new_prompt, at, slot, *rest):
    admits.append(slot.shape)
    return admit(sp, state, prompt, logits, new_prompt, at, slot, *rest)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(E, "_admit", spy)
    got = jax.tree.map(np.asarray, jax.device_get(_run(queued, sharded, mode)))
  assert len(admits) >= 2 and all(s[0] == queued.lay.D for s in admits), admits  # per data shard
  want = single[mode]
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_array_equal(got["lengths"], want["lengths"])
  np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-5)


def test_weights_stay_split_and_the_decode_loop_gathers_no_weights(on_mesh):
  eng, sharded, queued = on_mesh
  lay = eng.lay
  ways = int(np.prod([lay.mesh.shape[a] for a in lay.tp]))
  with mesh_context(lay.mesh):
    dparams = eng._to_rollout(sharded)
    for layer in dparams["layers"]:
      for name, axis in (("q", 1), ("k", 1), ("v", 1), ("o", 0)):  # [embed, heads, head_dim], o [heads, ..]
        w = layer["attn"][name]
        assert w.addressable_shards[0].data.shape[axis] * ways == w.shape[axis], (name, w.sharding)
      for w in jax.tree.leaves(layer["mlp"]):
        assert w.addressable_shards[0].data.size * ways == w.size, w.sharding
    emb = dparams["embed"]["embedding"]
    assert emb.addressable_shards[0].data.shape[0] * ways == emb.shape[0]

    # One decode chunk's program, built from the engine's own pieces.
    sp = E.Spec(CFG, 0, "sample", lay)
    put = lambda a: jax.device_put(a, lay.spec(a))
    B = 2 * lay.D
    padded, lens = left_pad((PROMPTS * 2)[:B])
    logits, prompt = E._prefill(CFG, lay, dparams, put(padded), put(lens))
    knobs = (jnp.float32(1.0), jnp.float32(1.0), jnp.int32(0))
    stop = jnp.asarray(np.array([-1], np.int32))
    state = E._start(sp, N_NEW, logits, prompt["lengths_B"], None, jax.random.PRNGKey(0),
                     put(np.arange(B * G, dtype=np.int32)), put(np.full(B * G, N_NEW, np.int32)), stop, *knobs)
    gen = E._new_gen(CFG, lay, B, G, 8)
    hlo = E._chunk.lower(sp, dparams, prompt, gen, state, jnp.int32(8), stop, *knobs).compile().as_text()
    # The refilled batch's chunk (per-row layout, a scatter per step), as the dry run lowers it.
    refill = queued.pieces(sharded, len(PROMPTS), padded.shape[1], 1.0, 1.0, 0, slots=8)["refill"]
    rows = refill.args[4]["done"].shape[0]
    hlo_refill = refill.jitted.lower(*refill.args).compile().as_text()
  for kv in (gen["k"][0], gen["v"][0], prompt["k"][0], prompt["v"][0]):  # [prompts, KV heads, ...]
    assert kv.addressable_shards[0].data.shape[:2] == (B // lay.D, CFG.n_kv_heads // ways), kv.sharding
  for text, R in ((hlo, B * G), (hlo_refill, rows)):
    collectives = re.findall(r"= (\S+) (all-gather|all-to-all|collective-permute|reduce-scatter|all-reduce)\(", text)
    kinds = {k for _, k in collectives}
    assert kinds <= {"all-reduce", "all-gather"}, collectives
    gathers = [s for s, k in collectives if k == "all-gather"]
    # The only gather: a step's logits [rows of one data shard, vocabulary] over the tensor axes.
    assert gathers and all(re.fullmatch(rf"f32\[{R // lay.D},{CFG.vocab_size}\]\S*", s) for s in gathers), gathers


def test_make_sampler_runs_the_engine_on_a_mesh_with_rollout_axes(params):
  mesh = make_mesh((2, 4, 1), devices=jax.devices()[:8])
  train = param_shardings(CFG, mesh)
  fast = make_sampler(CFG, max_new_tokens=4, engine="fast", mesh=mesh, param_shardings=train,
                      rollout_axes=("fsdp", "tensor"))
  assert isinstance(fast, Engine) and fast.lay.D == 2
  program = make_sampler(CFG, max_new_tokens=4, engine="program", mesh=mesh, param_shardings=train,
                         rollout_axes=("fsdp", "tensor"))
  padded, lens = left_pad(PROMPTS[:4])
  args = (jax.random.PRNGKey(0), np.float32(0), np.float32(1), np.int32(0))
  sharded = jax.device_put(params, train)
  got, want = (jax.tree.map(np.asarray, jax.device_get(f(sharded, padded, lens, *args))) for f in (fast, program))
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-5)
  assert not isinstance(make_sampler(CFG, max_new_tokens=4, engine="fast", mesh=mesh, param_shardings=train),
                        Engine)  # no rollout axes: the single program in the training layout
