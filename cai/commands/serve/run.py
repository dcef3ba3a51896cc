"""Start the reward service: check everything, load the models, bind, print the address (and a token made for this
run, once), serve until SIGTERM or Ctrl-C, finishing the requests in flight."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.errors import CaiError
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig

TOKEN_ENV = "CAI_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class ServeOptions:
    """The server's own settings (the signals' come from their declarations, as in `cai generate`)."""

    host: str = setting("127.0.0.1", "Address to bind; keep loopback unless you must.")
    port: int = setting(8000, "Port (0: any free port).", minimum=0, maximum=65535)
    max_body: int = setting(1 << 20, "Largest request body, in bytes (413 past it).", minimum=1)
    max_items: int = setting(512, "Most items in one request (413 past it).", minimum=1)
    queue: int = setting(4096, "Items waiting or in work at most (429 past it).", minimum=1)
    batch_ms: float = setting(5.0, "How long a model batch waits for more items, in milliseconds.", minimum=0)
    max_batch: int = setting(64, "Most items in one model batch.", minimum=1)


def serve(config: RunConfig, o: ServeOptions, log: Callable[[str], None] = print) -> None:
    """Serve `config`'s constitution and signals (cai.signals: the ones its settings turn on) until stopped."""
    import uvicorn

    from cai.commands.serve.app import create_app
    from cai.commands.serve.scorer import Scorer
    from cai.core.constitution import load
    from cai.core.context import RunContext
    from cai.core.prompts import Templates
    from cai.core.rules import require_sandbox

    if o.max_items > o.queue:
        raise CaiError(
            f"--max-items {o.max_items} is more than --queue {o.queue}: such a request could never be served"
        )
    const = load(config.run.constitution)
    require_sandbox(const.rules)  # a code rule's sandbox works here, or the server does not start
    templates = Templates(config.run.templates)
    ctx = RunContext(config, const, templates, None, log=log)
    scorer = Scorer(ctx, max_batch=o.max_batch, deadline=o.batch_ms / 1000)  # checks every signal's settings
    templates.check(scorer.set.template_specs())
    token = os.environ.get(TOKEN_ENV)
    made = token is None
    if made:
        token = secrets.token_urlsafe(24)
    assert token is not None
    sock = socket.socket(socket.AF_INET6 if ":" in o.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((o.host, o.port))
    except OSError as e:
        raise CaiError(f"--host {o.host} --port {o.port}: cannot bind: {e.strerror}") from None
    scorer.warm()
    engine = None
    if scorer.set.needs_engine(ctx):
        from cai.run.lifecycle import start_engine

        engine = start_engine(config, log)
        engine.progress = False
        scorer.ctx = dataclasses.replace(ctx, backend=engine)
    loopback = is_loopback(o.host)
    app = create_app(scorer, token, max_body=o.max_body, max_items=o.max_items, queue=o.queue, loopback=loopback)
    bound = sock.getsockname()[1]
    where = f"http://{o.host}:{bound}"
    log(f"cai serve: rewards of {const.name} ({', '.join(scorer.signals)}) at {where}  (POST /v1/rewards, /get_reward)")
    if made:
        log(f"cai serve: token {token}  (made for this run; set {TOKEN_ENV} to choose one)")
    if not loopback:
        log(f"cai serve: bound to {o.host}, not loopback: anyone who can reach it needs only the token")
    uvicorn_config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30, lifespan="on")
    try:
        _server_class()(uvicorn_config).run(sockets=[sock])
    finally:
        if engine is not None:
            engine.close()
    log("cai serve: stopped; the requests in flight were answered")


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM or Ctrl-C that shut it down cleanly (the requests in flight answered) ends
        the process with 0 (uvicorn raises the signal again after its shutdown, so a supervisor would see a kill)."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
