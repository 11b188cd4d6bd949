"""The remote reward service client against a real HTTP server on 127.0.0.1 that is slow, drops
connections, returns malformed bodies and flags malformed references."""
import http.server
import json
import threading
import time

import numpy as np
import pytest

from granite_jax.rl.rewards import RewardDataError
from granite_jax.rl.rewards.scorer import build_rewards
from granite_jax.rl.rewards.service import RewardService, RewardServiceError


class Handler(http.server.BaseHTTPRequestHandler):
  """POST /MODE: reward = len(response) unless MODE makes the request fail (see `fail`)."""
  log = []          # (mode, n items) per request
  failures_left = {}  # mode -> requests still to fail ("flaky" modes)
  lock = threading.Lock()

  def log_message(self, *a):
    pass

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    mode = self.path.strip("/")
    items = body["items"]
    with self.lock:
      Handler.log.append((mode, len(items)))
      left = Handler.failures_left.get(mode, 10 ** 9)
      Handler.failures_left[mode] = left - 1
    kind, _, _ = mode.partition("-")
    if left > 0 and kind == "slow":
      time.sleep(1.0)
    elif left > 0 and kind == "drop":
      self.connection.shutdown(2)  # no status line: the client sees the connection dropped
      return
    elif left > 0 and kind == "malformed":
      return self._reply(200, b'{"rewards": [1.0, ')
    elif left > 0 and kind == "short":
      return self._reply(200, json.dumps({"rewards": [1.0]}).encode())
    elif kind == "badref":
      bad = [i for i, it in enumerate(items) if it["reference"] is None]
      if bad:
        return self._reply(422, json.dumps({"error": "reference is null", "index": bad[0]}).encode())
    rewards = [None if it["response"] == "unscorable" else float(len(it["response"])) for it in items]
    self._reply(200, json.dumps({"rewards": rewards, "domains": [it["domain"] for it in items]}).encode())

  def _reply(self, code, data):
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{srv.server_address[1]}"
  srv.shutdown()


def items(responses, domain="code", refs=None):
  return [dict(prompt="p", response=r, reference=(refs[i] if refs else "ref"), domain=domain)
          for i, r in enumerate(responses)]


def svc(url, **kw):
  return RewardService(url, **{**dict(timeout_s=0.5, retries=2, backoff_s=0.05, batch_size=2,
                                      concurrency=2), **kw})


@pytest.mark.parametrize("mode", ["slow", "drop", "malformed", "short"])
def test_faults_are_retried_then_succeed(server, mode):
  Handler.failures_left[f"{mode}-1"] = 1  # the first request fails, its retry succeeds
  out = svc(f"{server}/{mode}-1", concurrency=1).score(items(["a", "bbb", "unscorable"]))
  assert out[:2] == [("ok", 1.0), ("ok", 3.0)] and out[2][0] == "error"


@pytest.mark.parametrize("mode", ["slow", "drop", "malformed"])
def test_persistent_faults_score_minimum_counted_or_stop(server, mode):
  Handler.failures_left[f"{mode}-all"] = 10 ** 6
  s = svc(f"{server}/{mode}-all", retries=1)
  t = time.perf_counter()
  out = s.score(items(["a", "bb", "ccc"]))
  assert [o[0] for o in out] == ["error"] * 3 and "after 2 tries" in out[0][1]
  assert time.perf_counter() - t < 5.0  # bounded by timeout x tries, not by the slow server
  with pytest.raises(RewardServiceError, match="2 failed batches in a row"):
    svc(f"{server}/{mode}-all", retries=0, max_consecutive_failures=2).score(items(["a", "b", "c", "d"]))


def test_scorer_per_domain_and_global_urls_batches_and_metrics(server):
  from configs import rl_math
  rl = rl_math.get_config("tiny").rl
  rl.reward_workers = 0
  rl.reward_url = f"code={server}/ok,judge={server}/malformed-all"
  rl.reward_weights = "code=0.5"
  rl.reward_min = "judge=-2"
  rl.reward_service.update(timeout_s=1.0, retries=0, batch_size=3)
  Handler.failures_left["malformed-all"] = 10 ** 6
  s = build_rewards(rl)
  n0 = len(Handler.log)
  r, m = s.score(["p"] * 6, ["ab", "abcd", "x", "yy", "\\boxed{4}", "unscorable"],
                 ["r", "r", "r", "r", "4", "r"], ["code", "code", "judge", "judge", "math", "code"])
  np.testing.assert_allclose(r, [1.0, 2.0, -2, -2, 1.0, 0.0])
  assert m["reward_failures/judge"] == 2 and m["reward_failures/code"] == 1 and m["reward_failures/math"] == 0
  assert sorted(Handler.log[n0:]) == [("malformed-all", 2), ("ok", 3)]  # one POST per domain batch
  with pytest.raises(ValueError, match="'poetry'"):
    s.check_domains(["code", "poetry"])
  rl.reward_url = f"{server}/ok"  # a bare URL scores every domain without another reward
  r, _ = build_rewards(rl).score(["p"], ["abc"], ["r"], ["poetry"])
  assert r.tolist() == [3.0]


def test_bad_reference_stops_naming_the_record(server):
  with pytest.raises(RewardDataError, match="reference='None'"):
    svc(f"{server}/badref").score(items(["a", "b"], refs=["r", None]))
