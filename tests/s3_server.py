"""A real S3 API server on 127.0.0.1 for tests (moto in server mode) and the AWS_* environment that
points the real clients (s3fs, boto3, TensorStore's s3 driver) at it. Nothing is mocked."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = "granite-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET):
  """Yields (boto3 client, env dict) with `bucket` created; the server is killed on exit."""
  pytest.importorskip("moto.server")
  boto3 = pytest.importorskip("boto3")
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  endpoint = f"http://127.0.0.1:{port}"
  env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}
  with pytest.MonkeyPatch.context() as mp:
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
      mp.delenv(k, raising=False)
    for k, v in env.items():
      mp.setenv(k, v)
    try:
      deadline = time.time() + 60
      while True:
        try:
          urllib.request.urlopen(endpoint, timeout=1).read()
          break
        except OSError:
          if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"moto_server did not start on {endpoint}") from None
          time.sleep(0.2)
      client = boto3.client("s3")
      client.create_bucket(Bucket=bucket)
      yield client, env
    finally:
      server.kill()
      server.wait()
