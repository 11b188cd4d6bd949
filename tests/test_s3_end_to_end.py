"""End to end on a real S3 API server (moto, 127.0.0.1): text shards on S3 -> the tokenize job ->
a token store on S3 -> training reads it (math from S3, the other domains from the demo corpus) ->
kill -9 after step 7 -> the rerun resumes from step 5 and finishes with the same losses, bit for bit,
as an uninterrupted run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.launcher import ROOT, metrics
from tests.s3_server import BUCKET, s3_server

STEPS, SAVE, KILL = 8, 5, 7
WORDS = "shards in object storage feed several phases of the recipe and every token counts once".split()


def _run(workdir, cache, env, extra_env=None):
  flags = ["--config=configs/phase2.py", f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
           f"--config.train.steps={STEPS}", f"--config.ckpt.every_steps={SAVE}", "--config.ckpt.async_save=False",
           "--config.train.log_every=1", "--config.train.eval_batches=0", "--config.train.seq_len=64",
           "--config.model.n_layers=1", f"--config.data.sources.math=s3://{BUCKET}/store",
           f"--config.data.eval_sources.math=s3://{BUCKET}/store"]
  run_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run_env.update(env, **(extra_env or {}))
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "run.py"), *flags], cwd=ROOT,
                        env=run_env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_s3_text_to_store_to_training_resumes_exactly_after_kill(tmp_path, demo_cache_dir):
  from ml_collections import ConfigDict

  from granite_jax.data.tokenizer import tokenizer_path
  tok = tokenizer_path(ConfigDict(dict(tokenizer="", cache_dir=demo_cache_dir)))
  rng = np.random.default_rng(0)
  with s3_server() as (client, env):
    for i in range(3):
      body = "".join(json.dumps({"text": " ".join(rng.choice(WORDS, size=int(rng.integers(5, 120))))}) + "\n"
                     for _ in range(40))
      client.put_object(Bucket=BUCKET, Key=f"text/part-{i:05d}.jsonl", Body=body.encode())
    job = subprocess.run([sys.executable, "-m", "granite_jax.data.tokenize", f"s3://{BUCKET}/text/",
                          f"--out=s3://{BUCKET}/store", f"--tokenizer={tok}", "--processes=2"],
                         cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="store/")["Contents"]}
    assert "store/manifest.json" in keys

    ref = str(tmp_path / "ref")
    r = _run(ref, demo_cache_dir, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "math 35.0%" in r.stdout
    want = [m["loss"] for m in metrics(ref)]
    assert len(want) == STEPS

    wd = str(tmp_path / "killed")
    r = _run(wd, demo_cache_dir, env, {"GRANITE_FAULT_KILL_STEP": str(KILL)})
    assert r.returncode == -9, r.stderr[-3000:]
    r = _run(wd, demo_cache_dir, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from step {SAVE}" in r.stdout
    got = [m["loss"] for m in metrics(wd)]
  assert got == want  # the same program on the same rows: bitwise
