"""`cai review`: a local web page to read a run and record a person's decisions, on the standard library.

Safety: everything in a run is untrusted model output, so the page sets every piece of it as text (never
as HTML) and the Content-Security-Policy forbids inline and foreign scripts besides. The server binds to
127.0.0.1 unless told otherwise, answers only requests whose Host is the address it serves (a page on another
site cannot reach it through DNS rebinding), asks for the per-session token on every API call, and reads
nothing but the run through RunStore: no request names a file.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cai.commands.review import query
from cai.core import decisions
from cai.core.store import RunStore
from cai.errors import CaiError

STATIC = {
    "/": ("page.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Review:
    """A running review server: `url` to open, `token` the page carries, `stop()` to end it."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    token: str

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _static(name: str) -> bytes:
    return resources.files("cai.commands.review").joinpath("static", name).read_bytes()


def start(run: str, host: str = "127.0.0.1", port: int = 0) -> Review:
    """Serve `run` in a background thread (port 0: any free port)."""
    store = RunStore(run)
    store.require()
    if not store.splits():
        raise CaiError(f"{run}: the run has no rows yet")
    token = secrets.token_urlsafe(24)
    hosts: set[str] = set()
    handler = type("Handler", (_Handler,), {"store": store, "token": token, "hosts": hosts})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise CaiError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None
    bound = server.server_address[1]
    hosts.update({f"{host}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"})
    thread = threading.Thread(target=server.serve_forever, name="cai-review", daemon=True)
    thread.start()
    return Review(server, thread, f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/", token)


def queue_split(run: str, queue: str) -> str:
    """The split of `run` that has the review queue `queue`; one line naming the queues there are when none has."""
    store = RunStore(run)
    store.require()
    have = {name: split for split in store.splits() for name in query.view_of(split).queues()}
    if queue not in have:
        raise CaiError(f"--queue {queue}: no split of {run} has that queue (have: {', '.join(have) or 'none'})")
    return have[queue]


class _Handler(BaseHTTPRequestHandler):
    store: RunStore
    token: str
    hosts: set[str]  # the Host values this server answers (set per server in `start`)
    server_version = "cai-review"

    def log_message(self, format, *args):  # quiet: the terminal shows the summary, not every request
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False, default=str).encode(), "application/json")

    def _allowed(self, api: bool) -> bool:
        if self.headers.get("Host") not in self.hosts:
            self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host"})
            return False
        if api and not secrets.compare_digest(self.headers.get("X-Cai-Token", ""), self.token):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong session token"})
            return False
        return True

    def do_GET(self):  # the standard library's name
        url = urlsplit(self.path)
        if url.path in STATIC:
            if not self._allowed(api=False):
                return
            name, kind = STATIC[url.path]
            body = _static(name)
            if name == "page.html":  # the token is ours (URL-safe base64), never model output
                body = body.replace(b"__CAI_TOKEN__", self.token.encode())
            return self._send(HTTPStatus.OK, body, kind)
        if url.path == "/favicon.ico":  # browsers ask; there is none
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if not url.path.startswith("/api/"):
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        if not self._allowed(api=True):
            return
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/api/meta":
                return self._json(HTTPStatus.OK, self._meta())
            if url.path == "/api/rows":
                f = query.parse(params, self.store.splits())
                return self._json(HTTPStatus.OK, query.page(self.store, f))
            if url.path == "/api/row":
                return self._json(HTTPStatus.OK, query.row(self.store, params.get("split", ""), params.get("id", "")))
        except CaiError as e:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self):
        if urlsplit(self.path).path != "/api/decide":
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        if not self._allowed(api=True):
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 65536:
                raise CaiError("request too large")
            body = json.loads(self.rfile.read(length) or b"null")
            splits = self.store.splits()
            split = body.get("split") if isinstance(body, dict) else None
            if split not in splits:
                raise CaiError(f"no split {split!r} in this run")
            d = decisions.parse(body, flippable=query.view_of(split).flippable)
            query.row(self.store, d.split, d.id)  # the row exists
        except (CaiError, json.JSONDecodeError, ValueError) as e:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        self.store.append_review(d.entry())
        return self._json(HTTPStatus.OK, {"ok": True, "counts": decisions.counts(self.store)})

    def _meta(self) -> dict:
        import polars as pl

        from cai import stages

        pipeline = [stages.get(n).split for n in stages.ordered(stages.names())]
        present = self.store.splits()  # in the pipeline's order (sft before prefs), then any others
        splits = {}
        for split in [s for s in pipeline if s in present] + [s for s in present if s not in pipeline]:
            frame = self.store.scan(split)
            assert frame is not None
            view = query.view_of(split)
            principles = (
                frame.select(
                    pl.col(view.principles).list.eval(pl.element().struct.field("principle")).explode().unique()
                )
                .collect()
                .to_series()
                .drop_nulls()
                .sort()
                .to_list()
                if view.principles
                else []
            )
            splits[split] = {
                "rows": self.store.count(split),
                "principles": principles,
                "layout": view.layout,
                "answer": view.answer,
                "flippable": view.flippable,
                "label": view.label,
                "queues": {name: {"help": q.help, "sort": q.sort} for name, q in view.queues().items()},
            }
        return {
            "run": str(Path(self.store.root).resolve().name),
            "splits": splits,
            "flags": query.flags(),
            "counts": decisions.counts(self.store),
        }
