"""The RL step on paper (plan/rl_time.py, through estimate.rl_step): rl_math at 8B on its GB200 layout against a hand
computation from the 8B preset's shapes and the GB200 figures, and the phases' bookkeeping. Its
layout has rollout axes, so rl/loop.py runs the fast engine (infer/engine.py): each prompt is
prefilled once, and a decode step reads the filled cache (the prompt plus half the response on
average), over the full response length of steps."""
import pytest

from granite_jax.plan import estimate, stages

# 8B preset (model/config.py): vocab, d_model, layers, heads, KV heads, head_dim, d_ff; tied embedding.
V, D, L, N, K, H, F = 100_352, 4096, 40, 32, 8, 128, 12_800
MATMUL = L * (D * H * (2 * N + 2 * K) + 3 * D * F) + D * V   # weights read by matmuls, LM head included
PARAMS = L * (D * H * (2 * N + 2 * K) + 3 * D * F + 2 * D) + V * D + D
PEAK, EFF, HBM, NVLINK, LAT = 2.5e15, 0.5, 8e12, 1.8e12, 1e-5
GPUS, WAYS, RANKS = 64, 8, 8                 # data=8 x fsdp=8; the rollout: fsdp as 8 ways, batch over data
PROMPTS, ROWS, P_LEN, R_LEN, T = 64, 64 * 16, 2048, 6144, 8192


@pytest.fixture(scope="module")
def step():
  return estimate.rl_step(stages.load("rl_math", "8b"))


def test_decode_is_weights_plus_cache_at_hbm_bandwidth(step):
  b, slots = ROWS / RANKS, P_LEN + R_LEN / 2          # the filled cache, on average over the steps
  weights = PARAMS * 2 / WAYS                        # bf16, 1/8 of every layer and the vocabulary
  cache = 2 * L * b * slots * (K / WAYS) * H * 2     # K and V, one KV head per GPU, the filled slots
  assert step.weight_read == pytest.approx(weights) and step.cache_read == pytest.approx(cache)
  assert weights / 2**30 == pytest.approx(1.95, abs=0.01) and cache / 2**30 == pytest.approx(12.5, abs=0.01)
  flops = b * (2 * MATMUL + 4 * L * slots * N * H) / WAYS
  assert flops / (PEAK * EFF) < (weights + cache) / HBM  # bandwidth-bound
  comm = (2 * L + 1) * LAT + 2 * L * b * D * 2 * 2 * (WAYS - 1) / WAYS / NVLINK
  one = (weights + cache) / HBM + comm
  assert step.decode_steps == R_LEN                  # the full response length (the longest row)
  assert step.decode_step_s == pytest.approx(one)
  assert step.decode_s == pytest.approx(R_LEN * one)
  assert step.decode_s == pytest.approx(R_LEN * 2.83e-3, rel=0.01)  # ~17.4 s: 1.9 ms of reads, 0.8 of latency


def test_prefill_logprobs_and_train_are_compute_bound(step):
  # each prompt once (the engine)
  prefill = PROMPTS * (P_LEN * (2 * (MATMUL - D * V) + 4 * L * P_LEN * N * H) + 2 * D * V) / GPUS / (PEAK * EFF)
  assert step.prefill_s == pytest.approx(prefill)
  assert step.reshard_s == pytest.approx(PARAMS * 2 / WAYS / NVLINK)
  fwd = ROWS * T * (2 * MATMUL + 4 * L * T * N * H) / GPUS / (PEAK * EFF)
  assert fwd > PARAMS * 4 * 7 / 8 / NVLINK            # the pass's FSDP all-gather hides under it
  # the reference's (kl_coef 0.05) and, where rl/step.py still runs one, the old policy's
  assert step.logprob_passes in (1, 2)
  assert step.logprobs_s == pytest.approx(step.logprob_passes * fwd)
  train = ROWS * T / GPUS * (6 * MATMUL + 12 * L * T * N * H) * 8 / 6 / (PEAK * EFF)
  assert step.train_s == pytest.approx(train)
  assert step.score_s == 0.0                          # verifiable rewards: no reward model


def test_phases_add_up_and_reach_the_table(step):
  d = estimate.rl_step_of("rl_math", "8b")
  assert d["rollout_s"] == pytest.approx(step.reshard_s + step.prefill_s + step.decode_s)
  assert d["total_s"] == pytest.approx(d["rollout_s"] + d["score_s"] + d["logprobs_s"] + d["train_s"])
  assert d["rollout_s"] > 0.5 * d["total_s"]          # generation is most of the step (issue 25)
  assert estimate.plan("rl_math", "8b").rl == step


def test_rlhf_scores_with_its_reward_model():
  rlhf = estimate.rl_step(stages.load("rlhf", "8b"))
  assert rlhf.score_s > 0
  hw = estimate.Hardware()
  slow = estimate.Hardware(peak_flops=hw.peak_flops * hw.efficiency)
  assert rlhf.score_s == pytest.approx(estimate.score_time(stages.load("rlhf", "8b"), slow)[1])


def test_the_training_layout_decodes_from_the_whole_gathered_model():
  c = stages.load("rl_math", "8b")
  c.rl.rollout_axes = ()
  s = estimate.rl_step(c)
  assert s.ways == 1 and s.rows_per_rank == ROWS / GPUS
  assert s.weight_read == pytest.approx(PARAMS * 2)   # every GPU reads all of it at every step
  # The single mesh program runs there: every sample row prefills, the whole cache is read.
  engine = estimate.rl_step(stages.load("rl_math", "8b"))
  assert s.prefill_s == pytest.approx(ROWS / PROMPTS * engine.prefill_s)
  assert s.cache_read == pytest.approx(2 * L * ROWS / GPUS * (P_LEN + R_LEN - 1) * K * H * 2)


def test_filled_cache_can_be_overridden():
  c = stages.load("rl_math", "8b")
  full = estimate.rl_step(c, filled_cache=False)
  assert full.cache_read == pytest.approx(2 * L * ROWS / RANKS * (P_LEN + R_LEN - 1) * (K / WAYS) * H * 2)
  assert full.decode_s > estimate.rl_step(c).decode_s
