"""End to end: a tiny RL run over a JSONL prompt file whose domains are scored by the built-in math
checker, a user function by import path and a 127.0.0.1 reward service that drops connections; the
sampler is forced to emit the answers that used to hang the run. It finishes its steps, logs
reward/<domain> and counts the failures per domain."""
import http.server
import json
import textwrap
import threading

import numpy as np
import pytest

from configs import rl_math
from granite_jax.data.chat_template import EOT
from granite_jax.data.tokenizer import get_tokenizer
from granite_jax.rl import loop as loop_mod
from granite_jax.train.metrics import read_metrics

ANSWERS = ["\\boxed{10^{10^{10}}}", "\\boxed{9**9**9**9}", "\\boxed{4}", "hang"]


class DropEveryOther(http.server.BaseHTTPRequestHandler):
  """Reward = 1 for a response containing '4'; every other connection is dropped (retries recover)."""
  n = 0
  lock = threading.Lock()

  def log_message(self, *a):
    pass

  def do_POST(self):
    items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
    with self.lock:
      DropEveryOther.n += 1
      drop = DropEveryOther.n % 2 == 1
    if drop:
      self.connection.shutdown(2)
      return
    data = json.dumps({"rewards": [float("4" in it["response"]) for it in items]}).encode()
    self.send_response(200)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)


def forced_sampler(tok, max_len):
  """make_sampler stand-in: every row's response is ANSWERS[row % 4] then EOT (no model compile)."""
  rows = [tok.encode(a + EOT).ids for a in ANSWERS]
  assert max(map(len, rows)) <= max_len, [len(r) for r in rows]

  def make(model_cfg, *, max_new_tokens, samples_per_prompt, **kw):
    def sample(params, prompts_BP, plen_B, rng, *a):
      n = len(prompts_BP) * samples_per_prompt
      tokens = np.zeros((n, max_new_tokens), np.int32)
      lengths = np.zeros(n, np.int32)
      for i in range(n):
        r = rows[i % len(rows)]
        tokens[i, :len(r)], lengths[i] = r, len(r)
      return dict(tokens=tokens, logprobs=np.full((n, max_new_tokens), -1.0, np.float32), lengths=lengths)
    return sample
  return make


@pytest.mark.slow
def test_rl_run_with_user_fn_service_and_hanging_answers(tmp_path, demo_cache_dir, monkeypatch):
  (tmp_path / "rl_user_rewards.py").write_text(textwrap.dedent('''
      import time
      def check(prompt, response, reference):
        if response == "hang":
          time.sleep(10 ** 6)
        return float(reference in response)
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DropEveryOther)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  prompts = tmp_path / "prompts.jsonl"
  with open(prompts, "w") as f:
    for i in range(8):
      f.write(json.dumps({"prompt": f"What is {i} - {i} + 4?", "reference": "4",
                          "domain": ["math", "mine", "svc", "math"][i % 4]}) + "\n")
  c = rl_math.get_config("tiny")
  for k, v in dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64).items():
    c.model[k] = v
  c.data.cache_dir = demo_cache_dir
  c.rl.prompts = c.rl.eval_prompts = str(prompts)
  c.rl.prompts_per_step, c.rl.samples_per_prompt, c.rl.eval_prompts_n = 8, 4, 8
  c.rl.max_prompt_len, c.rl.max_response_len, c.rl.overlong_buffer = 40, 24, 4
  c.train.global_batch, c.train.seq_len = 32, 64
  c.train.steps, c.train.eval_batches, c.ckpt.every_steps, c.ckpt.async_save = 2, 0, 2, False
  c.rl.reward_fns = "mine=rl_user_rewards:check"
  c.rl.reward_url = f"svc=http://127.0.0.1:{srv.server_address[1]}/score"
  c.rl.reward_timeout_s, c.rl.reward_workers = 3.0, 2
  c.rl.reward_service.update(timeout_s=5.0, retries=2, backoff_s=0.05, max_consecutive_failures=3)
  tok = get_tokenizer(c.data)
  monkeypatch.setattr(loop_mod, "make_sampler", forced_sampler(tok, c.rl.max_response_len))
  try:
    out = loop_mod.run_rl(c, str(tmp_path / "run"), progress=False)
  finally:
    srv.shutdown()
  recs = read_metrics(str(tmp_path / "run"))
  assert out["steps"] == 2 and [r["step"] for r in recs] == [1, 2]
  for r in recs:  # 8 prompts x 4 samples, rows cycle through ANSWERS: one '\boxed{4}' per group
    assert r["reward/math"] == r["reward/mine"] == r["reward/svc"] == pytest.approx(0.25)
    assert r["reward_failures/math"] == 0 and r["reward_failures/svc"] == 0  # retries recovered
    assert r["reward_failures/mine"] == 2 and r["reward_timeouts"] == 2  # the 'hang' rows, 2 prompts
  assert DropEveryOther.n >= 4  # every batch was dropped once, then retried


def test_unknown_domain_in_prompt_file_stops_at_start(tmp_path, demo_cache_dir):
  prompts = tmp_path / "p.jsonl"
  prompts.write_text(json.dumps({"prompt": "hi", "reference": "x", "domain": "poetry"}) + "\n")
  c = rl_math.get_config("tiny")
  c.data.cache_dir = demo_cache_dir
  c.rl.prompts = str(prompts)
  c.rl.reward_workers = 0
  with pytest.raises(ValueError, match=r"rl.prompts=.*p.jsonl.*'poetry'"):
    loop_mod.run_rl(c, str(tmp_path / "run"), progress=False)
