"""A remote reward service: batched JSON over HTTP POST (stdlib only).

Wire format (one POST per batch of at most `batch_size` items, Content-Type: application/json):
  request   {"items": [{"prompt": str, "response": str, "reference": any JSON, "domain": str}, ...]}
  200 reply {"rewards": [float | null, ...]}   same length and order; null = could not score this
                                               response (scores the domain's minimum, counted)
  422 reply {"error": str, "index": int}       item `index` has a malformed reference: the run stops
                                               (RewardDataError naming the record)
Anything else (connection refused or dropped, timeout, other status, a body that is not this
JSON) is retried up to `retries` times with exponential backoff (backoff_s * 2^k); a batch that
still fails scores the minimum for each item, counted as failures. `max_consecutive_failures` > 0
stops the run (RewardServiceError) after that many failed batches in a row: a service that is down,
rather than flaky, should not silently train on minimum rewards. Batches are sent by at most
`concurrency` threads at once.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import time
import urllib.error
import urllib.request

from granite_jax.rl.rewards.base import RewardDataError


class RewardServiceError(RuntimeError):
  """The reward service failed `max_consecutive_failures` batches in a row."""


class RewardService:
  def __init__(self, url: str, *, timeout_s: float = 30.0, concurrency: int = 4, retries: int = 2,
               backoff_s: float = 0.5, batch_size: int = 32, max_consecutive_failures: int = 0):
    if concurrency < 1 or batch_size < 1 or retries < 0 or timeout_s <= 0:
      raise ValueError(f"rl.reward_service: concurrency={concurrency}, batch_size={batch_size} must be "
                       f">= 1, retries={retries} >= 0, timeout_s={timeout_s} > 0")
    self.url, self.timeout_s, self.concurrency = url, float(timeout_s), int(concurrency)
    self.retries, self.backoff_s, self.batch_size = int(retries), float(backoff_s), int(batch_size)
    self.max_consecutive_failures = int(max_consecutive_failures)
    self.consecutive_failures = 0
    self.requests = 0

  def _post(self, items: list[dict]) -> list:
    body = json.dumps({"items": items}).encode()
    req = urllib.request.Request(self.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    self.requests += 1
    try:
      with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
        data = resp.read()
    except urllib.error.HTTPError as e:
      if e.code == 422:
        try:
          err = json.loads(e.read())
          i = int(err["index"])
        except (ValueError, KeyError, TypeError):
          raise ValueError("HTTP 422 with a body that is not {'error', 'index'}") from None
        if 0 <= i < len(items):
          raise RewardDataError(f"reward service {self.url}: malformed reference of the record "
                                f"{_describe(items[i])}: {err.get('error')}") from None
      raise ValueError(f"HTTP {e.code}") from None
    rewards = json.loads(data)["rewards"]
    if not isinstance(rewards, list) or len(rewards) != len(items):
      raise ValueError(f"'rewards' is not a list of {len(items)} values")
    out = []
    for r in rewards:
      if r is None:
        out.append(("error", "the service returned null for this response"))
      elif isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r):
        out.append(("ok", float(r)))
      else:
        raise ValueError(f"reward {r!r} is not a finite number or null")
    return out

  def _batch(self, items: list[dict]) -> tuple[list, str | None]:
    err = None
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))
      try:
        return self._post(items), None
      except RewardDataError:
        raise
      except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:  # URLError is an OSError
        err = f"{type(e).__name__}: {e}"
    return [("error", f"reward service {self.url}: {err} (after {self.retries + 1} tries)")] * len(items), err

  def score(self, items: list[dict]) -> list[tuple[str, object]]:
    """items: dicts with prompt, response, reference, domain -> one outcome per item."""
    batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
    out: list = []
    with cf.ThreadPoolExecutor(self.concurrency) as ex:
      for res, err in ex.map(self._batch, batches):
        out += res
        if err is None:
          self.consecutive_failures = 0
          continue
        self.consecutive_failures += 1
        if self.max_consecutive_failures and self.consecutive_failures >= self.max_consecutive_failures:
          raise RewardServiceError(
              f"reward service {self.url}: {self.consecutive_failures} failed batches in a row "
              f"(rl.reward_service.max_consecutive_failures={self.max_consecutive_failures}); last: {err}")
    return out


def _describe(item: dict) -> str:
  return f"domain={item.get('domain')!r} reference={str(item.get('reference'))[:80]!r} " \
         f"prompt={str(item.get('prompt'))[-80:]!r}"
