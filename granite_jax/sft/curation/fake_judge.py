"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and the demo.

`script(request_json) -> reply text` decides each reply. The server records
every request and the highest number of requests it served at once (to check
that the judge pool is bounded).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class FakeJudgeServer:
  def __init__(self, script: Callable[[dict], str], delay_s: float = 0.0):
    self.script, self.delay_s = script, delay_s
    self.requests: list[dict] = []
    self.in_flight = self.max_in_flight = 0
    self._lock = threading.Lock()
    server = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *args):  # keep test output quiet
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server._lock:
          server.requests.append(body)
          server.in_flight += 1
          server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
          time.sleep(server.delay_s)
          reply = server.script(body)
        finally:
          with server._lock:
            server.in_flight -= 1
        if reply is None:  # scripted transport failure
          self.send_error(500, "scripted failure")
          return
        data = json.dumps({"id": "fake", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self) -> "FakeJudgeServer":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self.httpd.shutdown()
    self.httpd.server_close()


def reply_json(scores: dict[str, float], flags=(), rationale: str = "scripted") -> str:
  return json.dumps({"scores": scores, "flags": list(flags), "rationale": rationale})
