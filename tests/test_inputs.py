"""Prompt loading: every format, stable ids, and one-line errors naming the file and line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import RED_TEAM, write

from cai.core.inputs import load, prompt_id
from cai.errors import CaiError


def test_shipped_prompt_sets():
    prompts, dups = load(str(RED_TEAM))
    assert len(prompts) >= 60 and dups == 0
    assert len({p.id for p in prompts}) == len(prompts)


def test_jsonl_prompt_and_messages_forms(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        "\n".join(
            [
                json.dumps({"prompt": "hello"}),
                json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}),
                json.dumps({"prompt": "hello"}),  # duplicate: dropped, counted
            ]
        )
        + "\n",
    )
    prompts, dups = load(str(path))
    assert [p.messages[-1]["content"] for p in prompts] == ["hello", "hi"]
    assert prompts[1].messages[0] == {"role": "system", "content": "s"}
    assert dups == 1
    assert prompts[0].id == prompt_id([{"role": "user", "content": "hello"}])


def test_text_parquet_and_dataset_folder(tmp_path):
    txt = write(tmp_path / "p.txt", "one\n\ntwo\n")
    assert [p.messages[-1]["content"] for p in load(str(txt))[0]] == ["one", "two"]
    pq.write_table(pa.table({"question": ["a", "b"]}), tmp_path / "p.parquet")
    assert [p.messages[-1]["content"] for p in load(str(tmp_path / "p.parquet"), "question")[0]] == ["a", "b"]
    import datasets

    datasets.Dataset.from_dict({"q": ["x", "y", "z"]}).save_to_disk(str(tmp_path / "ds"))
    prompts, _ = load(str(tmp_path / "ds"), "q", limit=2)
    assert [p.messages[-1]["content"] for p in prompts] == ["x", "y"]


def test_ids_are_stable_across_files_and_order(tmp_path):
    a = load(str(write(tmp_path / "a.jsonl", '{"prompt": "x"}\n{"prompt": "y"}\n')))[0]
    b = load(str(write(tmp_path / "b.txt", "y\nx\n")))[0]
    assert {p.id for p in a} == {p.id for p in b}


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"prompt": "ok"}\n{"prompt": oops}\n', r"p.jsonl:2: bad JSON"),
        ('{"prompt": "ok"}\n{"text": "x"}\n', r"p.jsonl:2: missing field 'prompt' or 'messages'"),
        ('{"prompt": "   "}\n', r"p.jsonl:1: empty prompt"),
        ("", r"no prompts found"),
        ("[1, 2]\n", r"p.jsonl:1: expected an object"),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
            r"p.jsonl:1: the last message must be the user's turn",
        ),
        ('{"messages": [{"role": "robot", "content": "q"}]}\n', r"p.jsonl:1: message 0 must be"),
    ],
)
def test_bad_prompt_files(tmp_path, content, message):
    with pytest.raises(CaiError, match=message):
        load(str(write(tmp_path / "p.jsonl", content)))


def test_binary_and_missing_files(tmp_path):
    with pytest.raises(CaiError, match="binary file"):
        load(str(write(tmp_path / "p.jsonl", b"\x00\x01\x02garbage")))
    with pytest.raises(CaiError, match="not UTF-8"):
        load(str(write(tmp_path / "p.txt", b"fine\ncaf\xe9\n")))
    with pytest.raises(CaiError, match="prompt file not found"):
        load(str(tmp_path / "missing.jsonl"))
    with pytest.raises(CaiError, match="missing column 'nope'"):
        load(str(write(tmp_path / "c.jsonl", '{"prompt": "x"}\n')), "nope")
