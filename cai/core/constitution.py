"""Principle / Constitution: load a constitution YAML file and validate it, naming file, line and key."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from cai.core import answer as answer_mod
from cai.core import rules as rules_mod
from cai.core.rules import Rule
from cai.errors import CaiError

MAX_BYTES = 1 << 20  # a constitution is a page of text; anything bigger is a mistake (or an attack)
# Letters and digits of any script (höflichkeit, вежливость), then also '_', '-' and '.'.
_ID = re.compile(r"^[^\W_][\w.-]*$")
SHIPPED = Path(str(files("cai").joinpath("constitutions")))  # package data: found wherever cai is installed


def shipped() -> list[str]:
    """The names of the constitutions that ship with cai."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve(spec: str | Path) -> Path:
    """A constitution file: `spec` as a path if it exists (or looks like one), else a shipped name."""
    path = Path(spec)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    if (SHIPPED / f"{spec}.yaml").is_file():
        return SHIPPED / f"{spec}.yaml"
    raise CaiError(f"{spec}: no such constitution file, and not a shipped one ({', '.join(shipped())})")


@dataclass(frozen=True)
class Principle:
    """A principle is judged by the model (critique, revision, compare), checked by rules, or both."""

    id: str
    critique: str | None = None  # the critique request: what to look for in the answer
    revision: str | None = None  # the revision request: how to rewrite the answer
    compare: str | None = None  # the multiple-choice question for the RL stage
    step: str | None = None  # the steps stage's question about one step of a solution (else the critique)
    tags: tuple[str, ...] = ()
    weight: float = 1.0  # relative chance of being sampled
    rules: tuple[Rule, ...] = ()  # checked by code (cai.core.rules)
    scope: str = "all"  # what the judges read of an answer under it: all, or the answer after the reasoning


@dataclass(frozen=True)
class Demonstration:
    """A few-shot example of one critique-and-revision round, shown before every real request."""

    prompt: str
    answer: str
    principle: str  # id of the principle whose requests the demonstration answers
    critique: str
    revision: str


@dataclass(frozen=True)
class Example:
    """An answered question shown before every prompt the model answers (a few-shot demonstration of the answer
    format: the embedded 135M model answers "What is 3 + 4?" right only when shown one, see data/prompts/arith.md)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    description: str = ""
    system: str | None = None
    few_shot: tuple[Demonstration, ...] = ()
    examples: tuple[Example, ...] = ()  # user/assistant turns between the system prompt and every answered prompt
    license: str | None = None
    scope: str = "all"  # what the judges, self-evaluation and the PM reward read: all, or the answer (cai.core.answer)
    path: str = ""
    sha256: str = ""

    def principle(self, pid: str) -> Principle:
        for p in self.principles:
            if p.id == pid:
                return p
        raise KeyError(pid)

    @property
    def critiquable(self) -> tuple[Principle, ...]:
        """Principles with a critique and revision request, the ones the SL stage samples."""
        return tuple(p for p in self.principles if p.critique)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule of every principle."""
        return tuple(r for p in self.principles for r in p.rules)

    @property
    def comparable(self) -> tuple[Principle, ...]:
        """Principles that carry a `compare` question, the ones the RL stage can sample."""
        return tuple(p for p in self.principles if p.compare)

    @property
    def steppable(self) -> tuple[Principle, ...]:
        """Principles the steps stage can judge a step under: a `step` question, else the critique request."""
        return tuple(p for p in self.principles if p.step or p.critique)


_TOP = {
    "name": True,
    "principles": True,
    "description": False,
    "system": False,
    "few_shot": False,
    "examples": False,
    "license": False,
    "scope": False,
}
_PRINCIPLE = {
    "id": True,
    "critique": False,
    "revision": False,
    "compare": False,
    "step": False,
    "tags": False,
    "weight": False,
    "rules": False,
    "scope": False,
}
_EXAMPLE = {"prompt": True, "answer": True}
_DEMO = {"prompt": True, "answer": True, "principle": True, "critique": True, "revision": True}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases: a constitution never needs them, and refusing them
    at composition time stops 'billion laughs' alias bombs before anything is expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused("YAML aliases (*name) are not allowed in a constitution", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise _Refused("YAML anchors (&name) are not allowed in a constitution", event.start_mark)
        return super().compose_node(parent, index)


class _Refused(Exception):
    def __init__(self, message, mark):
        super().__init__(message)
        self.mark = mark


def load(path: str | Path) -> Constitution:
    """Read and validate a constitution file (or a shipped one by name); every problem raises CaiError naming
    file:line and key."""
    path = resolve(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CaiError(f"{path}: constitution file not found") from None
    except IsADirectoryError:
        raise CaiError(f"{path}: is a folder, expected a constitution YAML file") from None
    except OSError as e:
        raise CaiError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise CaiError(f"{path}: {len(raw)} bytes is too large for a constitution (limit {MAX_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CaiError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    try:
        node = yaml.compose(text, Loader=_NoAliasLoader)
    except _Refused as e:
        raise CaiError(f"{path}:{e.mark.line + 1}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}" if mark else ""
        raise CaiError(f"{path}{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise CaiError(f"{path}: invalid YAML: {e}") from None
    if node is None:
        raise CaiError(f"{path}: empty file, expected a mapping with 'name' and 'principles'")
    return _Builder(str(path)).constitution(node, hashlib.sha256(raw).hexdigest())


class _Builder:
    """Turns the composed YAML node tree into dataclasses, keeping node line numbers for errors."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, node, message):
        raise CaiError(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node, spec, where):
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{where} must be a mapping, got {_kind(node)}")
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in spec:
                allowed = ", ".join(spec)
                self.fail(key_node, f"{where}: unknown key {key!r} (allowed: {allowed})")
            if key in out:
                self.fail(key_node, f"{where}: key {key!r} given twice")
            out[key] = value_node
        for key, required in spec.items():
            if required and key not in out:
                self.fail(node, f"{where}: missing required key {key!r}")
        return out

    def text_records(self, m, key, spec) -> list[tuple[dict, dict[str, str]]]:
        """The optional top-level list `key` of mappings whose values are all text: (nodes, texts) for each item,
        the nodes kept for errors that name a line."""
        if key not in m:
            return []
        if not isinstance(m[key], yaml.SequenceNode):
            self.fail(m[key], f"'{key}' must be a list, got {_kind(m[key])}")
        out = []
        for i, item in enumerate(m[key].value):
            d = self.mapping(item, spec, f"{key}[{i}]")
            out.append((d, {k: self.text(v, f"{key}[{i}].{k}") for k, v in d.items()}))
        return out

    def text(self, node, where, *, blank_ok=False):
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.fail(node, f"{where} must be text, got {_kind(node)}")
        if not blank_ok and not node.value.strip():
            self.fail(node, f"{where} is blank")
        return node.value.strip()

    def scope(self, node, where: str) -> str:
        value = self.text(node, where)
        if value not in answer_mod.SCOPES:
            self.fail(node, f"{where} must be one of {', '.join(answer_mod.SCOPES)}, got {value!r}")
        return value

    def principle(self, node, index, scope: str = "all"):
        m = self.mapping(node, _PRINCIPLE, f"principles[{index}]")
        pid = self.text(m["id"], f"principles[{index}].id")
        if not _ID.match(pid):
            self.fail(
                m["id"],
                f"principle id {pid!r}: use letters, digits (any script), '_', '-' and '.' only, "
                "starting with a letter or digit",
            )
        where = f"principle {pid!r}"
        tags: tuple[str, ...] = ()
        if "tags" in m:
            if not isinstance(m["tags"], yaml.SequenceNode):
                self.fail(m["tags"], f"{where}: 'tags' must be a list of text, got {_kind(m['tags'])}")
            tags = tuple(self.text(t, f"{where}: tag") for t in m["tags"].value)
        weight = 1.0
        if "weight" in m:
            w = m["weight"]
            if not isinstance(w, yaml.ScalarNode) or w.tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
                self.fail(w, f"{where}: 'weight' must be a number, got {_kind(w)}")
            weight = float(w.value)
            if not weight > 0 or weight == float("inf"):
                self.fail(w, f"{where}: 'weight' must be a positive number, got {w.value}")
        for have, lack in (("critique", "revision"), ("revision", "critique")):
            if have in m and lack not in m:
                self.fail(node, f"{where}: missing required key {lack!r} ({have} and {lack} go together)")
        rules = self.rules(m["rules"], pid) if "rules" in m else ()
        if "critique" not in m and "step" not in m and not rules:
            self.fail(node, f"{where}: missing required key 'critique' (with 'revision'), 'step', or 'rules'")
        return Principle(
            id=pid,
            critique=self.text(m["critique"], f"{where}: 'critique'") if "critique" in m else None,
            revision=self.text(m["revision"], f"{where}: 'revision'") if "revision" in m else None,
            compare=self.text(m["compare"], f"{where}: 'compare'") if "compare" in m else None,
            step=self.text(m["step"], f"{where}: 'step'") if "step" in m else None,
            tags=tags,
            weight=weight,
            rules=rules,
            scope=self.scope(m["scope"], f"{where}: 'scope'") if "scope" in m else scope,
        )

    def rules(self, node, pid: str) -> tuple[Rule, ...]:
        where = f"principle {pid!r}: 'rules'"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.fail(node, f"{where} must be a non-empty list of rules, got {_kind(node)}")
        out: list[Rule] = []
        seen: dict[str, int] = {}
        for item in node.value:
            if not isinstance(item, yaml.MappingNode):
                self.fail(item, f"{where}: each rule must be a mapping such as {{max_words: 200}}, got {_kind(item)}")
            spec = yaml.SafeLoader("").construct_object(item, deep=True)
            kind = next((k for k in spec if k in rules_mod.KINDS), "")
            seen[kind] = seen.get(kind, -1) + 1
            try:
                out.append(rules_mod.build(pid, seen[kind], spec))
            except ValueError as e:
                self.fail(item, f"principle {pid!r}: {e}")
        return tuple(out)

    def constitution(self, node, sha256):
        m = self.mapping(node, _TOP, "constitution")
        seq = m["principles"]
        if not isinstance(seq, yaml.SequenceNode):
            self.fail(seq, f"'principles' must be a list, got {_kind(seq)}")
        if not seq.value:
            self.fail(seq, "'principles' is empty: a constitution needs at least one principle")
        principles: list[Principle] = []
        seen: dict[str, int] = {}
        scope = self.scope(m["scope"], "'scope'") if "scope" in m else "all"
        for i, item in enumerate(seq.value):
            p = self.principle(item, i, scope)
            if p.id in seen:
                self.fail(item, f"duplicate principle id {p.id!r} (first defined on line {seen[p.id]})")
            seen[p.id] = item.start_mark.line + 1
            principles.append(p)
        demos = []
        for i, (d, values) in enumerate(self.text_records(m, "few_shot", _DEMO)):
            if values["principle"] not in seen:
                self.fail(d["principle"], f"few_shot[{i}]: unknown principle id {values['principle']!r}")
            if not next(p for p in principles if p.id == values["principle"]).critique:
                self.fail(
                    d["principle"],
                    f"few_shot[{i}]: principle {values['principle']!r} has no critique to demonstrate",
                )
            demos.append(Demonstration(**values))
        examples = [Example(**values) for _, values in self.text_records(m, "examples", _EXAMPLE)]
        return Constitution(
            name=self.text(m["name"], "'name'"),
            principles=tuple(principles),
            description=self.text(m["description"], "'description'", blank_ok=True) if "description" in m else "",
            system=self.text(m["system"], "'system'") if "system" in m else None,
            few_shot=tuple(demos),
            examples=tuple(examples),
            license=self.text(m["license"], "'license'") if "license" in m else None,
            scope=scope,
            path=self.path,
            sha256=sha256,
        )


def _kind(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"str": "text", "int": "a number", "float": "a number", "bool": "true/false", "null": "nothing"}.get(
        tag, tag
    ) + (f" ({node.value!r})" if tag != "null" else "")
