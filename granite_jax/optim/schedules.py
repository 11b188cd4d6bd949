"""Learning-rate schedules: functions of the integer optimizer step.

Conventions (shared by every schedule):
  * `step` is the optax update count: 0 for the first update (optimizer
    steps, not micro-batches).
  * Warmup is linear from 0 at step 0 to its target at `warmup_steps`, so the
    very first update has lr 0 (the standard optax behaviour).
  * Decaying schedules reach their end value at step `total_steps`, i.e. one
    past the last trained step `total_steps - 1` (as optax.linear_schedule).
  * The post-warmup part of a joined schedule sees `t = step - warmup_steps`.
"""

import math

import jax.numpy as jnp
import optax

from granite_jax.optim.config import SCHEDULES, validate_optim_config


def _f32(step):
  return jnp.asarray(step, jnp.float32)


def _warmup_frac(step, warmup_steps):
  if warmup_steps == 0:
    return jnp.float32(1.0)
  return jnp.minimum(_f32(step) / warmup_steps, 1.0)


def linear_warmup(peak_lr, warmup_steps) -> optax.Schedule:
  """0 -> peak_lr over warmup_steps, then peak_lr."""
  return lambda step: peak_lr * _warmup_frac(step, warmup_steps)


def _after_warmup(peak_lr, warmup_steps, decay) -> optax.Schedule:
  """Linear warmup, then `decay(t)` with t counted from the end of warmup."""
  return optax.join_schedules([linear_warmup(peak_lr, warmup_steps), decay], [warmup_steps])


def _check_decay_steps(decay_steps, what):
  if decay_steps <= 0:
    raise ValueError(f"{what}: total_steps must exceed optim.warmup_steps (got {decay_steps} decay steps)")


def constant(peak_lr, warmup_steps) -> optax.Schedule:
  return linear_warmup(peak_lr, warmup_steps)


def power(peak_lr, warmup_steps, a, b, tokens_per_step, tokens_offset=0.0) -> optax.Schedule:
  """IBM power scheduler (Shen et al. 2024): min(peak, a * tokens_seen**b).

  tokens_offset continues the curve of an earlier stage (phase 2 starts
  where phase 1's 10T tokens left it).

  Warmup multiplies this curve by step/warmup_steps (so it ramps to the power
  value, not to peak). Tokens are counted in float32: step * tokens_per_step
  overflows int32 after ~2^31 tokens.
  """

  def schedule(step):
    # tokens_seen=0 would give inf; the warmup factor is 0 there anyway.
    tokens = jnp.maximum(_f32(step) * float(tokens_per_step) + float(tokens_offset), 1.0)
    lr = jnp.minimum(peak_lr, a * tokens**b)
    return lr * _warmup_frac(step, warmup_steps)

  return schedule


def exponential(peak_lr, warmup_steps, decay_steps, final_lr, min_ratio=1e-3) -> optax.Schedule:
  """peak * (final/peak)**(t/decay_steps), floored at final_lr.

  final_lr=0 cannot be reached by an exponential, so the curve decays toward
  peak_lr * min_ratio instead and is clamped to exactly 0 from t=decay_steps.
  """
  _check_decay_steps(decay_steps, "exponential schedule")
  floor = final_lr if final_lr > 0 else peak_lr * min_ratio
  log_ratio = math.log(floor / peak_lr)

  def decay(t):
    lr = peak_lr * jnp.exp(log_ratio * _f32(t) / decay_steps)
    lr = jnp.maximum(lr, floor)
    if final_lr == 0:
      lr = jnp.where(t >= decay_steps, 0.0, lr)
    return lr

  return _after_warmup(peak_lr, warmup_steps, decay)


def linear_to_zero(peak_lr, warmup_steps, total_steps) -> optax.Schedule:
  decay_steps = total_steps - warmup_steps
  _check_decay_steps(decay_steps, "linear_to_zero schedule")
  # (D - t) / D rather than 1 - t / D: no float32 cancellation near the end.
  return _after_warmup(
    peak_lr, warmup_steps, lambda t: peak_lr * jnp.clip((decay_steps - _f32(t)) / decay_steps, 0.0, 1.0)
  )


def wsd(peak_lr, warmup_steps, total_steps, decay_fraction, final_lr) -> optax.Schedule:
  """Warmup-stable-decay: hold peak, then linear to final_lr over the last
  decay_fraction of total_steps (a fraction of all steps, warmup included)."""
  decay_steps = max(1, round(decay_fraction * total_steps))
  stable_steps = total_steps - decay_steps - warmup_steps
  if stable_steps < 0:
    raise ValueError(
      f"wsd schedule: optim.warmup_steps={warmup_steps} + decay "
      f"({decay_fraction} * {total_steps} = {decay_steps} steps) exceeds "
      f"total_steps={total_steps}"
    )

  def decay(t):
    left = jnp.clip((stable_steps + decay_steps - _f32(t)) / decay_steps, 0.0, 1.0)
    return final_lr + (peak_lr - final_lr) * left

  return _after_warmup(peak_lr, warmup_steps, decay)


def cosine(peak_lr, warmup_steps, total_steps, final_lr) -> optax.Schedule:
  decay_steps = total_steps - warmup_steps
  _check_decay_steps(decay_steps, "cosine schedule")

  def decay(t):
    frac = jnp.clip(_f32(t) / decay_steps, 0.0, 1.0)
    # cos^2(pi f / 2) == (1 + cos(pi f)) / 2, without cancellation near f=1.
    return final_lr + (peak_lr - final_lr) * jnp.cos(0.5 * jnp.pi * frac) ** 2

  return _after_warmup(peak_lr, warmup_steps, decay)


def resolve_warmup(optim_cfg, total_steps) -> int:
  """Warmup steps: round(warmup_fraction * total_steps) (at least 1) when the fraction is set."""
  frac = optim_cfg.get("warmup_fraction", 0.0)
  return max(1, round(frac * total_steps)) if frac > 0 else optim_cfg.warmup_steps


def make_schedule(optim_cfg, *, total_steps, tokens_per_step) -> optax.Schedule:
  """Builds the schedule named by optim_cfg.schedule.

  tokens_per_step is tokens per optimizer step (global batch, including
  gradient accumulation); only the power schedule uses it.
  """
  validate_optim_config(optim_cfg)
  c = optim_cfg
  kind = c.schedule
  w = resolve_warmup(c, total_steps)
  if kind == "power":
    if not tokens_per_step > 0:
      raise ValueError(f"power schedule needs tokens_per_step > 0, got {tokens_per_step}")
    return power(
      c.peak_lr, w, c.power_a, c.power_b, tokens_per_step, c.get("tokens_offset", 0.0)
    )
  if kind == "constant":
    return constant(c.peak_lr, w)
  if kind == "exponential":
    return exponential(c.peak_lr, w, total_steps - w, c.final_lr, c.min_ratio)
  if kind == "linear_to_zero":
    return linear_to_zero(c.peak_lr, w, total_steps)
  if kind == "wsd":
    return wsd(c.peak_lr, w, total_steps, c.decay_fraction, c.final_lr)
  if kind == "cosine":
    return cosine(c.peak_lr, w, total_steps, c.final_lr)
  raise ValueError(f"optim.schedule={kind!r} is not one of {list(SCHEDULES)}")


def describe_schedule(optim_cfg, total_steps, tokens_per_step) -> str:
  """One line for the startup printout: shape, warmup, and lr at key steps."""
  c = optim_cfg
  sched = make_schedule(c, total_steps=total_steps, tokens_per_step=tokens_per_step)
  shape = {
    "power": f"min({c.peak_lr:g}, {c.power_a:g} * tokens^{c.power_b:g})",
    "exponential": f"exp decay {c.peak_lr:g} -> {c.final_lr:g}"
    + (f" (via floor {c.peak_lr * c.min_ratio:g})" if c.final_lr == 0 else ""),
    "linear_to_zero": f"linear {c.peak_lr:g} -> 0",
    "wsd": f"stable {c.peak_lr:g}, linear -> {c.final_lr:g} over last {c.decay_fraction:g}",
    "cosine": f"cosine {c.peak_lr:g} -> {c.final_lr:g}",
    "constant": f"constant {c.peak_lr:g}",
  }[c.schedule]
  w = resolve_warmup(c, total_steps)
  return (
    f"lr schedule {c.schedule}: {shape}, linear warmup {w} steps; "
    f"lr@{w}={float(sched(w)):.3g}, lr@{total_steps // 2}="
    f"{float(sched(total_steps // 2)):.3g}, lr@{total_steps - 1}="
    f"{float(sched(total_steps - 1)):.3g} ({total_steps} steps, "
    f"{total_steps * tokens_per_step:.3g} tokens)"
  )
