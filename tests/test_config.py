"""Run config: YAML sets it, flags override, unknown keys and bad values fail with file:line."""

import pytest
from conftest import write

from cai.config import RunConfig, load
from cai.errors import CaiError


def test_defaults_follow_the_paper():
    from cai.judges.cot import CotOptions
    from cai.judges.labels import LabelOptions
    from cai.stages.sl import SLOptions

    c = RunConfig()
    o = (c.options(SLOptions).rounds, c.run.stage, c.options(LabelOptions).judge, c.options(CotOptions).cot_clamp)
    assert o == (4, "all", "logprob", 0.4)


def test_yaml_then_flags(tmp_path):
    path = write(tmp_path / "run.yaml", "rounds: 2\nseed: 7\nmax-tokens: 64\n")
    from cai.stages.sl import SLOptions

    c = load(path, seed=3, rounds=None)
    assert (c.options(SLOptions).rounds, c.run.seed, c.sampling.max_tokens) == (2, 3, 64)


@pytest.mark.parametrize(
    "text,message",
    [
        ("rounds: 2\nbogus: 1\n", r"run.yaml:2: unknown key 'bogus'"),
        ("rounds: two\n", r"run.yaml:1: 'rounds' \(--rounds\): must be int"),
        (
            "stage: everything\n",
            r"run.yaml:1: 'stage' \(--stage\): must be one of sample, rank, sl, rl, select, steps, all",
        ),
        ("rounds: 0\n", r"run.yaml:1: 'rounds' \(--rounds\): must be at least 1"),
        ("- a\n", r"run.yaml:1: a run config must be a mapping"),
        ("rounds: [\n", r"run.yaml:2: invalid YAML"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    with pytest.raises(CaiError, match=message):
        load(write(tmp_path / "run.yaml", text))


def test_bad_flag_value():
    with pytest.raises(CaiError, match=r"'cot_clamp' \(--cot-clamp\): must be in \[0, 0.5\]"):
        load(None, cot_clamp=0.7)


def test_identity_tracks_what_shapes_the_rows():
    a, b = RunConfig(seed=1), RunConfig(seed=2)
    assert a.identity("c", "t") != b.identity("c", "t")
    assert RunConfig(chunk_size=5).identity("c", "t") == RunConfig(chunk_size=9).identity("c", "t")
