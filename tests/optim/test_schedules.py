"""Schedule values vs closed-form formulas written independently with math."""

import math

import jax
import jax.numpy as jnp
import pytest

from granite_jax.optim import SCHEDULES, default_optim_config, describe_schedule, make_schedule
from granite_jax.optim import schedules as S

PEAK, WARM, TOTAL, FINAL = 1e-3, 100, 1000, 1e-5
# start, mid-warmup, end of warmup, middle, near end, end
STEPS = [0, 50, 100, 550, 999, 1000]


def cfg(**kw):
  c = default_optim_config()
  c.update(dict(peak_lr=PEAK, warmup_steps=WARM, final_lr=FINAL) | kw)
  return c


def warm(step):
  return min(step / WARM, 1.0)


def check(sched, expected, steps=STEPS):
  for s in steps:
    assert float(sched(s)) == pytest.approx(expected(s), rel=1e-5, abs=1e-12), s


def test_constant():
  check(
    make_schedule(cfg(schedule="constant"), total_steps=TOTAL, tokens_per_step=1), lambda s: PEAK * warm(s)
  )


def test_power():
  a, b, tps = 4.6, -0.51, 4096 * 1024

  def ref(s):
    # Python float: no int32 overflow at 1000 * 4M tokens.
    return warm(s) * min(PEAK, a * max(s * tps, 1) ** b) if s else 0.0

  sched = make_schedule(cfg(schedule="power", power_a=a, power_b=b), total_steps=TOTAL, tokens_per_step=tps)
  check(sched, ref, STEPS + [10**6])
  # The curve is below peak here, so the warmup ramps to the power value.
  assert float(sched(WARM)) == pytest.approx(a * (WARM * tps) ** b, rel=1e-5)
  assert float(sched(WARM)) < PEAK


def test_power_continues_with_tokens_offset():
  # Phase 2 continues phase 1's curve: its step 0 sits at 10T tokens.
  a, b, tps, off = 4.6, -0.51, 4096 * 1024, 10e12
  sched = make_schedule(
    cfg(schedule="power", power_a=a, power_b=b, warmup_steps=0, tokens_offset=off),
    total_steps=TOTAL,
    tokens_per_step=tps,
  )
  for s in (0, 7, 900):
    assert float(sched(s)) == pytest.approx(min(PEAK, a * (s * tps + off) ** b), rel=1e-5)


def test_power_capped_at_peak():
  sched = S.power(PEAK, 0, a=4.6, b=-0.51, tokens_per_step=1)
  assert float(sched(1)) == pytest.approx(PEAK)


def test_exponential():
  def ref(s):
    if s < WARM:
      return PEAK * warm(s)
    return max(PEAK * (FINAL / PEAK) ** ((s - WARM) / (TOTAL - WARM)), FINAL)

  sched = make_schedule(cfg(schedule="exponential"), total_steps=TOTAL, tokens_per_step=1)
  check(sched, ref, STEPS + [2000])
  assert float(sched(TOTAL)) == pytest.approx(FINAL, rel=1e-5)


def test_exponential_to_zero_uses_floor_then_zero():
  ratio = 1e-3
  sched = make_schedule(
    cfg(schedule="exponential", final_lr=0.0, min_ratio=ratio), total_steps=TOTAL, tokens_per_step=1
  )
  mid = 550
  assert float(sched(mid)) == pytest.approx(PEAK * ratio ** ((mid - WARM) / (TOTAL - WARM)), rel=1e-5)
  assert float(sched(TOTAL - 1)) == pytest.approx(
    PEAK * ratio ** ((TOTAL - 1 - WARM) / (TOTAL - WARM)), rel=1e-4
  )
  assert float(sched(TOTAL)) == 0.0
  assert float(sched(TOTAL + 5)) == 0.0


def test_linear_to_zero():
  check(
    make_schedule(cfg(schedule="linear_to_zero"), total_steps=TOTAL, tokens_per_step=1),
    lambda s: PEAK * warm(s) if s < WARM else PEAK * max(0.0, 1 - (s - WARM) / (TOTAL - WARM)),
    STEPS + [1500],
  )
  assert float(S.linear_to_zero(PEAK, WARM, TOTAL)(TOTAL)) == 0.0


def test_wsd():
  frac = 0.2
  decay_start = TOTAL - frac * TOTAL  # 800

  def ref(s):
    if s < WARM:
      return PEAK * warm(s)
    if s < decay_start:
      return PEAK
    return PEAK + (FINAL - PEAK) * min((s - decay_start) / (frac * TOTAL), 1.0)

  check(
    make_schedule(cfg(schedule="wsd", decay_fraction=frac), total_steps=TOTAL, tokens_per_step=1),
    ref,
    STEPS + [799, 800, 900, 1200],
  )


def test_cosine():
  def ref(s):
    if s < WARM:
      return PEAK * warm(s)
    p = min((s - WARM) / (TOTAL - WARM), 1.0)
    return FINAL + (PEAK - FINAL) * 0.5 * (1 + math.cos(math.pi * p))

  check(make_schedule(cfg(schedule="cosine"), total_steps=TOTAL, tokens_per_step=1), ref, STEPS + [1200])


def test_zero_warmup_starts_at_peak():
  for kind in ("constant", "linear_to_zero", "cosine", "wsd", "exponential"):
    sched = make_schedule(cfg(schedule=kind, warmup_steps=0), total_steps=TOTAL, tokens_per_step=1)
    assert float(sched(0)) == pytest.approx(PEAK), kind


def test_unknown_kind():
  with pytest.raises(ValueError, match=r"optim.schedule='foo' is not one of \['power'"):
    make_schedule(cfg(schedule="foo"), total_steps=TOTAL, tokens_per_step=1)


def test_warmup_longer_than_run():
  with pytest.raises(ValueError, match="total_steps must exceed optim.warmup_steps"):
    make_schedule(cfg(schedule="cosine", warmup_steps=TOTAL), total_steps=TOTAL, tokens_per_step=1)
  with pytest.raises(ValueError, match="wsd schedule"):
    make_schedule(
      cfg(schedule="wsd", warmup_steps=900, decay_fraction=0.2), total_steps=TOTAL, tokens_per_step=1
    )


def test_describe_every_kind():
  for kind in SCHEDULES:
    line = describe_schedule(cfg(schedule=kind), TOTAL, 1024)
    assert line.startswith(f"lr schedule {kind}:") and "\n" not in line


def test_jit_int32_step_matches_eager():
  # optax passes an int32 count; 4M tokens/step overflows int32 by step 512.
  for kind in SCHEDULES:
    sched = make_schedule(cfg(schedule=kind), total_steps=10**6, tokens_per_step=4 * 2**20)
    jitted = jax.jit(sched)
    for s in (0, 50, 5000, 10**6 - 1):
      assert float(jitted(jnp.int32(s))) == pytest.approx(float(sched(s)), rel=1e-5, abs=1e-12)
  power = make_schedule(cfg(schedule="power"), total_steps=10**6, tokens_per_step=4 * 2**20)
  assert float(jax.jit(power)(jnp.int32(10**5))) == pytest.approx(
    4.6 * (10**5 * 4 * 2**20) ** -0.51, rel=1e-4
  )
