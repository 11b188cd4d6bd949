"""`build_rewards(config, tok) -> RewardScorer`: scores a rollout batch, bounded, per domain.

Where a domain's reward comes from (first match wins):
  rl.reward_fns  'domain=package.module:function[@batched]'  a user function (registry.py)
  rl.reward_url  'domain=URL'                               a reward service (service.py)
  built-in       registry.BUILTIN                            this package's verifiers
  chat           rl.reward_model                             a scalar reward model, in this process:
                                                             the whole batch at once, sharded over the
                                                             stage's mesh (rl/rm_scorer.py)
  rl.reward_url  a bare URL                                  the service, for every other domain
Functions run in `rl.reward_workers` worker processes (pool.py) under rl.reward_timeout_s per call and
rl.reward_memory_mb; 0 workers runs them in this process without limits (debugging only). A call that
raises, hangs, runs out of memory or crashes scores the domain's minimum (rl.reward_min, default 0;
chat -10) and is counted in `reward_failures/<domain>`; a malformed reference (RewardDataError) stops
the run naming the record. Rewards are scaled per domain by rl.reward_weights.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from granite_jax.rl.rewards.base import Reward, RewardDataError
from granite_jax.rl.rewards.pool import RewardPool
from granite_jax.rl.rewards.registry import BUILTIN, parse_map, parse_urls, resolve
from granite_jax.rl.rewards.service import RewardService

CHAT_MIN_REWARD = -10.0  # reward-model logits: far below any real score


@dataclasses.dataclass
class Source:
  kind: str                        # "fn" (in workers) | "local" (this process) | "service"
  path: str = ""                   # fn: import path
  batched: bool = False
  local: Callable | None = None    # local: fn(prompt, response, reference) -> float; batched:
                                   # fn(prompts, responses, references) -> [N] for all of its rows
  service: RewardService | None = None


class RewardScorer:
  def __init__(self, sources: dict[str, Source], *, fallback: Source | None = None,
               pool: RewardPool | None = None, weights: dict[str, float] | None = None,
               mins: dict[str, float] | None = None, batch_size: int = 32):
    self.sources, self.fallback, self.pool = sources, fallback, pool
    self.weights, self.mins, self.batch_size = weights or {}, mins or {}, batch_size
    self.totals: dict[str, int] = {}  # failures per domain over the run
    self._pending: dict[str, float] = {}  # metrics of the score() calls since pop_metrics()

  def source(self, domain: str) -> Source:
    src = self.sources.get(domain, self.fallback)
    if src is None:
      raise RewardDataError(f"reward domain {domain!r} is not one of {sorted(self.sources)} "
                            "(add it with rl.reward_fns or rl.reward_url)")
    return src

  def check_domains(self, domains: Sequence[str], where: str = "rl.prompts") -> None:
    """At start: every domain of the prompt file has a reward (ValueError naming it otherwise)."""
    for d in sorted(set(domains)):
      try:
        self.source(d)
      except RewardDataError as e:
        raise ValueError(f"{where}: {e}") from None

  def min_reward(self, domain: str) -> float:
    return self.mins.get(domain, CHAT_MIN_REWARD if domain == "chat" else 0.0)

  def score(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence,
            domains: Sequence[str], records: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
    """-> (weighted rewards [N] float32, metrics). `records` name the items in data errors."""
    t0 = time.perf_counter()
    n = len(prompts)
    out: list = [None] * n
    calls, call_rows, service_rows, local_rows, batch_rows = [], [], {}, [], {}
    by_fn: dict[tuple[str, bool], list[int]] = {}
    for i, d in enumerate(domains):
      src = self.source(d)
      if src.kind == "service":
        service_rows.setdefault(id(src.service), (src.service, []))[1].append(i)
      elif src.kind == "local" and src.batched:
        batch_rows.setdefault(id(src), (src, []))[1].append(i)
      elif src.kind == "local" or self.pool is None:
        local_rows.append(i)
      else:
        by_fn.setdefault((src.path, src.batched), []).append(i)
    for (path, batched), rows in by_fn.items():
      step = self.batch_size if batched else 1
      for k in range(0, len(rows), step):
        r = rows[k:k + step]
        calls.append((path, batched, [prompts[i] for i in r], [responses[i] for i in r],
                      [references[i] for i in r]))
        call_rows.append(r)
    if calls:
      for rows, res in zip(call_rows, self.pool.run(calls)):
        for i, o in zip(rows, res):
          out[i] = o
    for service, rows in service_rows.values():
      items = [dict(prompt=prompts[i], response=responses[i], reference=references[i], domain=domains[i])
               for i in rows]
      for i, o in zip(rows, service.score(items)):
        out[i] = o
    for src, rows in batch_rows.values():
      for i, o in zip(rows, self._local_batch(src, [prompts[i] for i in rows], [responses[i] for i in rows],
                                              [references[i] for i in rows])):
        out[i] = o
    for i in local_rows:
      out[i] = self._local(domains[i], prompts[i], responses[i], references[i])
    return self._combine(out, domains, prompts, records, time.perf_counter() - t0)

  def _local(self, domain, prompt, response, reference) -> tuple[str, object]:
    src = self.source(domain)
    fn = src.local or resolve(src.path)[0]
    if src.batched:
      fn = (lambda f: lambda p, r, ref: f([p], [r], [ref])[0])(fn)
    reward = Reward(domain, fn, min_reward=np.nan)
    try:
      r = reward(prompt, response, reference)
    except RewardDataError as e:
      return "data", str(e)
    return ("error", "raised or non-finite") if np.isnan(r) else ("ok", r)

  @staticmethod
  def _local_batch(src: Source, prompts, responses, references) -> list[tuple[str, object]]:
    """One call for all rows (the reward model's batch); an exception fails every row, a
    non-finite score its own."""
    try:
      got = np.asarray(src.local(prompts, responses, references), np.float64).reshape(-1)
      if len(got) != len(prompts):
        raise ValueError(f"{len(got)} scores for {len(prompts)} responses")
    except RewardDataError as e:
      return [("data", str(e))] * len(prompts)
    except Exception:  # noqa: BLE001 - counted as failures, like a raising reward function
      return [("error", "raised")] * len(prompts)
    return [("ok", float(r)) if np.isfinite(r) else ("error", "non-finite") for r in got]

  def _combine(self, out, domains, prompts, records, seconds) -> tuple[np.ndarray, dict]:
    rewards = np.zeros(len(out), np.float32)
    fails = {d: 0 for d in domains}
    kinds = {"timeout": 0, "crash": 0, "error": 0}
    for i, (status, value) in enumerate(out):
      d = domains[i]
      if status == "data":
        rec = records[i] if records and records[i] else f"item {i} (prompt ...{str(prompts[i])[-60:]!r})"
        raise RewardDataError(f"reward {d!r}: malformed reference of record {rec}: {value}")
      if status == "ok":
        raw = float(value)
      else:
        raw = self.min_reward(d)
        fails[d] += 1
        kinds[status] = kinds.get(status, 0) + 1
      rewards[i] = self.weights.get(d, 1.0) * raw
    for d, k in fails.items():
      self.totals[d] = self.totals.get(d, 0) + k
    metrics = {f"reward_failures/{d}": float(k) for d, k in sorted(fails.items())}
    metrics.update(reward_failures=float(sum(fails.values())), reward_timeouts=float(kinds["timeout"]),
                   reward_crashes=float(kinds["crash"]), reward_score_s=seconds,
                   reward_worker_restarts=float(self.pool.restarts if self.pool else 0))
    for k, v in metrics.items():
      self._pending[k] = v if k == "reward_worker_restarts" else self._pending.get(k, 0.0) + v
    return rewards, metrics

  def pop_metrics(self) -> dict[str, float]:
    """Summed metrics of every score() call since the last pop (a step may score several batches)."""
    out, self._pending = self._pending, {}
    return out

  def close(self) -> None:
    if self.pool is not None:
      self.pool.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def as_scorer(rewards) -> RewardScorer:
  """A RewardScorer as is; a legacy {domain: Reward} dict scored in this process (no limits)."""
  if isinstance(rewards, RewardScorer):
    return rewards
  return RewardScorer({d: Source("local", local=r) for d, r in rewards.items()},
                      mins={d: r.min_reward for d, r in rewards.items()})


def reward_model_source(config, tok, mesh=None) -> Source:
  """rl.reward_model restored on the stage's mesh (`mesh`, else `config.mesh` built as the run
  scaffold builds it), scoring `score_rows` rows per call: a batched local source."""
  from granite_jax.rl import reward_model as rm_lib
  from granite_jax.rl.rm_scorer import load
  rl = config.rl if "rl" in config else config
  if mesh is None and "mesh" in config:
    from granite_jax.sharding.mesh import mesh_from_config
    mesh = mesh_from_config(config.mesh)
  rows = None
  if mesh is not None and "train" in config:
    rows = rm_lib.score_rows(config, rm_lib.batch_shards(mesh))
  model = load(rl.reward_model, tok, mesh=mesh, rows=rows,
               template=rl.reward_model_template if "reward_model_template" in rl else "auto")
  return Source("local", batched=True, local=lambda p, r, ref: model.score_batch(p, r))


def build_rewards(config, tok=None, *, chat_model: Callable | None = None, mesh=None) -> RewardScorer:
  """The run's scorer from `config.rl` (a full config or its rl block). Call `.close()` at the end.
  `chat_model(prompt, response)`: a chat reward of your own instead of rl.reward_model."""
  rl = config.rl if "rl" in config else config
  get = lambda k, d: rl[k] if k in rl else d  # noqa: E731 -- older configs lack the new fields
  sources = {d: Source("fn", path=p) for d, p in BUILTIN.items()}
  for d, path in parse_map(get("reward_fns", ""), "rl.reward_fns").items():
    _, batched = resolve(path)  # fails now, naming the path, rather than in a worker
    sources[d] = Source("fn", path=path, batched=batched)
  svc = get("reward_service", {}) or {}
  make_service = lambda url: RewardService(url, **{k: svc[k] for k in svc})  # noqa: E731
  global_url, urls = parse_urls(get("reward_url", ""))
  user_fns = parse_map(get("reward_fns", ""), "rl.reward_fns")
  for d, url in urls.items():
    if d not in user_fns:
      sources[d] = Source("service", service=make_service(url))
  if "chat" not in user_fns and "chat" not in urls:
    if chat_model is not None:
      from granite_jax.rl.rewards.chat import make_chat_reward
      sources["chat"] = Source("local", local=make_chat_reward(chat_model))
    elif get("reward_model", ""):
      sources["chat"] = reward_model_source(config, tok, mesh)
  fallback = Source("service", service=make_service(global_url)) if global_url else None
  workers = int(get("reward_workers", 4))
  paths = sorted({s.path for s in sources.values() if s.kind == "fn"})
  pool = RewardPool(workers, float(get("reward_timeout_s", 10.0)), int(get("reward_memory_mb", 2048)),
                    preload=tuple(paths)).start() if workers > 0 else None
  return RewardScorer(sources, fallback=fallback, pool=pool,
                      weights=parse_map(get("reward_weights", ""), "rl.reward_weights", float),
                      mins=parse_map(get("reward_min", ""), "rl.reward_min", float),
                      batch_size=int(get("reward_batch_size", 32)))
