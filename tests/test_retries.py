"""Bounded retries in the server backend: transient errors are retried, up to the bound, then recorded."""

import http.server
import json
import threading
import time

import pytest

from cai.backends import Sampling
from cai.backends.openai import OpenAIBackend


class _Hub(http.server.BaseHTTPRequestHandler):
    """Lists one model; answers every completion with the status in `status` (503 by default)."""

    status = 503
    completions = 0

    def do_GET(self):
        self._json(200, {"data": [{"id": "m"}]})

    def do_POST(self):
        if self.path.endswith("/tokenize"):
            return self._json(404, {"error": {"message": "no"}})
        type(self).completions += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if type(self).status == 200:
            return self._json(
                200,
                {
                    "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                },
            )
        self._json(type(self).status, {"error": {"message": f"status {type(self).status}"}})

    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hub.completions = 0
    yield server
    server.shutdown()
    _Hub.status = 503


def _backend(server, **kw):
    return OpenAIBackend([f"http://127.0.0.1:{server.server_port}"], None, progress=False, **kw)


def test_gives_up_after_the_attempt_bound(hub):
    backend = _backend(hub, attempts=3, retry_seconds=60)
    (out,), (other,) = backend.generate(
        [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], Sampling(max_tokens=4)
    )
    assert not out.ok and "HTTP 503" in out.error and "gave up after 3 attempt(s)" in out.error
    assert not other.ok and _Hub.completions == 6  # two requests x three attempts, then stop


def test_gives_up_after_the_time_bound(hub):
    backend = _backend(hub, attempts=1000, retry_seconds=2)
    t0 = time.monotonic()
    ((out,),) = backend.generate([[{"role": "user", "content": "a"}]], Sampling(max_tokens=4))
    assert not out.ok and time.monotonic() - t0 < 40 and _Hub.completions < 1000


def test_client_errors_are_not_retried(hub):
    _Hub.status = 400
    ((out,),) = _backend(hub, attempts=5).generate([[{"role": "user", "content": "a"}]], Sampling(max_tokens=4))
    assert not out.ok and out.error.startswith("server: HTTP 400") and _Hub.completions == 1


def test_success_and_the_served_model_name(hub):
    _Hub.status = 200
    backend = _backend(hub)
    assert backend.model == "m"
    ((out,),) = backend.generate([[{"role": "user", "content": "a"}]], Sampling(max_tokens=4))
    assert out.ok and out.text == "hi" and out.tokens == 1


def test_no_server_is_one_line():
    from cai.errors import CaiError

    with pytest.raises(CaiError, match="no OpenAI-compatible server answers"):
        OpenAIBackend(["http://127.0.0.1:9"], None)
