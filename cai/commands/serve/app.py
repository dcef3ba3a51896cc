"""The reward service's ASGI app (FastAPI): endpoints, authentication, limits, the bounded queue and metrics.

POST /get_reward   OpenRLHF's remote reward model wire format (openrlhf/cli/serve_rm.py and the client in
                   openrlhf/utils/remote_rm_utils.py): {"query": [prompt + response], "prompts": [prompt],
                   "labels": [reference]} in; {"rewards": [...], "scores": [...], "extra_logs": {...}} out
POST /v1/rewards   cai's own: {"items": [{"prompt": text or messages, "response": text, "reference"?}],
                   "weights"?: {"rules": 1, "pm": 1}} in; a reward per item with its named components out
GET  /health       liveness, no token (for load balancers)
GET  /metrics      Prometheus text: requests by endpoint and code, latency histogram, items, queue depth

Safe by default: a bearer token on every endpoint but /health (on /get_reward it may come as `?token=`, as
OpenRLHF's client adds no header: its --remote_rm_url then carries it); when bound to loopback, a Host header
that is not a loopback name is refused (DNS rebinding) and so is any browser Origin; bodies over `max_body` bytes
are 413 (counted as they stream in, whatever Content-Length says); more than `max_items` items in one request are
413; a full queue (`queue` items waiting or in work) is 429 with Retry-After, never an unbounded backlog; bad JSON
or a missing field is 400 with a one-line reason.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import Request  # at import: FastAPI reads the handlers' annotations by name from this module

from cai.commands.serve.scorer import Item, Scorer

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _hostname(host: str) -> str:
    """The name of a Host header, its port left off (`[::1]:8000` -> `[::1]`)."""
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _messages(value: Any, what: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise Refused(400, f"{what}: expected text or a list of {{role, content}} messages")


def _text(value: Any, what: str) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if not isinstance(value, str):
        raise Refused(400, f"{what}: expected text (or assistant messages)")
    return value


def _reference(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Refused(400, f"{what}: expected text or a number")
    return str(value)


def native_items(body: Any, max_items: int) -> list[Item]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise Refused(400, 'expected {"items": [{"prompt", "response", "reference"?}, ...]}')
    items = body["items"]
    if len(items) > max_items:
        raise Refused(413, f"{len(items)} items in one request; at most {max_items}")
    out = []
    for k, it in enumerate(items):
        if not isinstance(it, dict) or "prompt" not in it or "response" not in it:
            raise Refused(400, f"items[{k}]: needs 'prompt' and 'response'")
        out.append(
            Item(
                _messages(it["prompt"], f"items[{k}].prompt"),
                _text(it["response"], f"items[{k}].response"),
                _reference(it.get("reference"), f"items[{k}].reference"),
            )
        )
    return out


def openrlhf_items(body: Any, max_items: int) -> list[Item]:
    """OpenRLHF sends each query as prompt + response (its chat template applied) and the prompts beside them: the
    response is what follows its prompt; `labels` are the references."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), list):
        raise Refused(400, 'expected {"query": [text, ...], "prompts"?: [...], "labels"?: [...]}')
    queries = body["query"]
    if len(queries) > max_items:
        raise Refused(413, f"{len(queries)} queries in one request; at most {max_items}")
    prompts = body.get("prompts")
    labels = body.get("labels")
    for name, given in (("prompts", prompts), ("labels", labels)):
        if given is not None and (not isinstance(given, list) or len(given) != len(queries)):
            raise Refused(400, f"{name}: expected a list of {len(queries)}, one per query")
    out = []
    for k, q in enumerate(queries):
        query = _text(q, f"query[{k}]")
        prompt = _text(prompts[k], f"prompts[{k}]") if prompts is not None else ""
        response = query[len(prompt) :] if prompt and query.startswith(prompt) else query
        label = _reference(labels[k], f"labels[{k}]") if labels is not None else None
        out.append(Item([{"role": "user", "content": prompt or query}], response, label))
    return out


def create_app(
    scorer: Scorer,
    token: str,
    *,
    max_body: int = 1 << 20,
    max_items: int = 512,
    queue: int = 4096,
    loopback: bool = True,
):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("cai_serve_requests", "Requests by endpoint and status", ["endpoint", "code"], registry=registry)
    latency = Histogram(
        "cai_serve_request_seconds",
        "Request latency",
        ["endpoint"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    items_total = Counter("cai_serve_items", "Items scored", registry=registry)
    depth = Gauge("cai_serve_queue_items", "Items waiting or being scored", registry=registry)
    state = {"in_flight": 0}
    app = FastAPI(title="cai serve", docs_url=None, redoc_url=None, openapi_url=None)

    def guard(request: Request, need_token: bool = True, in_url: bool = False) -> None:
        if loopback:
            if _hostname(request.headers.get("host") or "") not in LOOPBACK_NAMES:
                raise Refused(403, f"Host {request.headers.get('host')!r} is not this loopback server's")
            if request.headers.get("origin"):
                raise Refused(403, "a browser Origin is refused: this is a service for trainers, not pages")
        if need_token:
            given = request.headers.get("authorization") or ""
            if in_url and not given and "token" in request.query_params:
                # OpenRLHF's client sends no headers of ours: its --remote_rm_url carries the token instead
                given = "Bearer " + request.query_params["token"]
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
                raise Refused(
                    401, "a bearer token is required (Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"}
                )

    async def body_of(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise Refused(413, f"body of {declared} bytes; at most {max_body}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise Refused(413, f"body over {max_body} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Refused(400, f"bad JSON: {e}") from None

    async def scored(request: Request, endpoint: str, parse) -> tuple[list, Any]:
        guard(request, in_url=endpoint == "get_reward")
        body = await body_of(request)
        items = parse(body, max_items)
        weights = None
        if isinstance(body, dict) and body.get("weights") is not None:
            w = body["weights"]
            if not isinstance(w, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in w.values()
            ):
                raise Refused(400, "weights: expected {signal: a number >= 0}")
            try:
                weights = scorer.check_weights({str(k): float(v) for k, v in w.items()})
            except ValueError as e:
                raise Refused(400, str(e)) from None
        if state["in_flight"] + len(items) > queue:
            raise Refused(
                429, f"the queue is full ({state['in_flight']} items in work, at most {queue})", {"Retry-After": "1"}
            )
        state["in_flight"] += len(items)
        depth.set(state["in_flight"])
        try:
            out = await scorer.score(items, weights)
        finally:
            state["in_flight"] -= len(items)
            depth.set(state["in_flight"])
        items_total.inc(len(items))
        return out, weights

    def answer(endpoint: str, make):
        async def handler(request: Request):
            t0 = time.perf_counter()
            try:
                payload = await make(request)
                response = payload if isinstance(payload, Response) else JSONResponse(payload)
                code = 200
            except Refused as e:
                code, response = e.status, JSONResponse({"error": e.reason}, status_code=e.status, headers=e.headers)
            requests.labels(endpoint, str(code)).inc()
            latency.labels(endpoint).observe(time.perf_counter() - t0)
            return response

        return handler

    async def openrlhf(request: Request) -> dict:
        out, _ = await scored(request, "get_reward", openrlhf_items)
        rewards = [s.reward if s.reward is not None else 0.0 for s in out]
        return {
            "rewards": rewards,
            "scores": rewards,
            "extra_logs": {
                **{f"cai/{name}": [s.components.get(name) for s in out] for name in scorer.signals},
                "cai/errors": [len(s.errors) for s in out],
            },
        }

    async def native(request: Request) -> dict:
        out, weights = await scored(request, "rewards", native_items)
        return {
            "rewards": [s.reward for s in out],
            "items": [s.json() for s in out],
            "weights": weights or scorer.weights,
        }

    async def metrics(request: Request):
        guard(request)
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    async def health(request: Request) -> dict:
        guard(request, need_token=False)
        return {"status": "ok", "signals": scorer.signals, "in_flight": state["in_flight"]}

    app.add_api_route("/get_reward", answer("get_reward", openrlhf), methods=["POST"])
    app.add_api_route("/v1/rewards", answer("rewards", native), methods=["POST"])
    app.add_api_route("/health", answer("health", health), methods=["GET"])
    app.add_api_route("/metrics", answer("metrics", metrics), methods=["GET"])

    app.router.on_shutdown.append(scorer.close)
    return app
