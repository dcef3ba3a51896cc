"""Start the reward service: check everything, load the models, bind, print the address (and a token made for this
run, once), serve until SIGTERM or Ctrl-C, finishing the requests in flight."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import socket
from collections.abc import Callable

from cai.errors import CaiError

TOKEN_ENV = "CAI_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    constitution: str,
    *,
    pm: str | None = None,
    prm: str | None = None,
    weights: str = "rules=1,pm=1,prm=1,p_true=1,grm=1",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body: int = 1 << 20,
    max_items: int = 512,
    queue: int = 4096,
    batch_ms: float = 5.0,
    max_batch: int = 64,
    model: str | None = None,
    self_eval: bool = False,
    grm: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    import uvicorn

    from cai.commands.serve.app import create_app
    from cai.commands.serve.scorer import Scorer
    from cai.core.constitution import load
    from cai.signals.rewardmodels import PM, PRM, check_pm

    const = load(constitution)
    if pm:
        check_pm(pm, "--pm", PM)
    if prm:
        check_pm(prm, "--prm", PRM)
    try:
        scorer = Scorer(const, pm, prm, weights, max_batch=max_batch, deadline=batch_ms / 1000)
    except ValueError as e:
        raise CaiError(f"--weights {e}") from None
    config = None
    if self_eval or grm:
        from cai.config import RunConfig
        from cai.core.prompts import Templates
        from cai.stages.sample import SampleStage

        config = RunConfig(
            constitution=constitution, self_eval=self_eval, sample_grm=grm, **({"model": model} if model else {})
        )
        Templates(config.run.templates).check(SampleStage(config).template_specs())
    token = os.environ.get(TOKEN_ENV)
    made = token is None
    if made:
        token = secrets.token_urlsafe(24)
    assert token is not None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise CaiError(f"--host {host} --port {port}: cannot bind: {e.strerror}") from None
    scorer.warm()
    engine = None
    if config is not None:
        from cai.commands.serve.scorer import Judged
        from cai.core.context import RunContext
        from cai.core.prompts import Templates
        from cai.run.lifecycle import start_engine

        engine = start_engine(config, log)
        engine.progress = False
        ctx = RunContext(config, const, Templates(config.run.templates), None, backend=engine, log=log)
        scorer.judged = Judged(ctx, self_eval, grm)
    loopback = is_loopback(host)
    app = create_app(scorer, token, max_body=max_body, max_items=max_items, queue=queue, loopback=loopback)
    bound = sock.getsockname()[1]
    where = f"http://{host}:{bound}"
    log(f"cai serve: rewards of {const.name} ({', '.join(scorer.signals)}) at {where}  (POST /v1/rewards, /get_reward)")
    if made:
        log(f"cai serve: token {token}  (made for this run; set {TOKEN_ENV} to choose one)")
    if not loopback:
        log(f"cai serve: bound to {host}, not loopback: anyone who can reach it needs only the token")
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
