"""One definition per signal: the same item gets the same value of every signal from the sample stage, `cai serve`
and the TRL reward functions, under a constitution that grades the answer only (`scope: answer`) and one that
grades the whole text (`scope: all`)."""

import httpx
import pytest

from cai.backends.scripted import ScriptedBackend
from cai.config import RunConfig
from cai.core.store import RunStore
from cai.generate import generate
from cai.rewards import reward_funcs
from tests.conftest import ROOT, write
from tests.test_reward_service import AUTH, Server

MATH = ROOT / "data" / "prompts" / "math.jsonl"
REASONING = (ROOT / "constitution" / "reasoning.yaml").read_text()


def _reply(chat, sampling, seed, index):
    """A reasoning, then an answer on steps of its own: what the scope takes away differs from what it keeps."""
    if chat[-1]["role"] == "assistant":
        return " the reasoning weighs both options."
    return (
        f"<think>First {index} we add.\nThen {seed} we check.</think>\nSo it is 12.\nThe answer is \\boxed{{{index}}}."
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_backbone):
    from cai.train import train

    folder = tmp_path_factory.mktemp("models")
    quiet = dict(log=lambda *_: None, backbone=tiny_backbone, epochs=1, max_length=64)
    train(str(ROOT / "data" / "eval" / "prefs.jsonl"), str(folder / "pm"), **quiet)
    train(str(ROOT / "data" / "eval" / "steps.jsonl"), str(folder / "prm"), kind="prm", **quiet)
    return str(folder / "pm"), str(folder / "prm")


@pytest.mark.parametrize("scope", ["answer", "all"])
def test_every_entry_point_gives_the_same_value(tmp_path, models, scope):
    pm, prm = models
    const = write(tmp_path / "c.yaml", f"scope: {scope}\n{REASONING}")
    out = tmp_path / "run"
    settings = dict(constitution=str(const), pm=pm, prm=prm)
    config = RunConfig(prompts=str(MATH), out=str(out), stage="sample", samples=2, limit=2, self_eval=True, **settings)
    generate(config, backend=ScriptedBackend(reply=_reply), log=lambda *_: None)
    rows = RunStore(out).read("samples")
    items = [(row["prompt"], s["text"], row["reference"], s) for row in rows for s in row["samples"] if s["text"]]
    assert len(items) == 4

    server = Server("--constitution", str(const), "--pm", pm, "--prm", prm, "--self-eval", "--backend", "scripted")
    try:
        body = {"items": [{"prompt": p, "response": t, "reference": r} for p, t, r, _ in items]}
        served = httpx.post(server.url + "/v1/rewards", json=body, headers=AUTH, timeout=120).json()["items"]
    finally:
        assert server.stop() == 0

    funcs = {f.__name__: f for f in reward_funcs(const, pm=pm, prm=prm)}
    prompts, texts, refs = [p for p, *_ in items], [t for _, t, *_ in items], [r for _, _, r, _ in items]
    trl = {name: funcs[fn](prompts, texts, reference=refs) for name, fn in (("pm", "preference_model"), ("prm", "prm"))}

    # a PM's reward is in standard units of a tiny random model (a small spread): batches padded differently move
    # the last digits, so equal means equal to 1e-3 (the scope bug this guards against moved it by 1.5)
    same = dict(rel=1e-3, abs=1e-3)
    for k, (_, _, _, sample) in enumerate(items):
        components = served[k]["components"]
        columns = (
            ("rules", "rules_score"),
            ("accuracy", "accuracy"),
            ("p_true", "p_true"),
            ("pm", "pm"),
            ("prm", "prm"),
        )
        for signal, column in columns:
            assert sample[column] is not None, (signal, sample)
            why = (scope, signal, sample["rules"], served[k]["rules"], served[k]["errors"])
            assert components[signal] == pytest.approx(sample[column], **same), why
        assert trl["pm"][k] == pytest.approx(sample["pm"], **same)
        assert trl["prm"][k] == pytest.approx(sample["prm"], **same)
        # the served reward grades with the request's reference: the sample's graded score
        assert served[k]["reward"] == pytest.approx(sample["graded_score"], **same)
