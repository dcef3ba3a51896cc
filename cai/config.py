"""RunConfig: the settings of one `cai generate`, gathered from the core and from every plug-in.

The core declares what to run on, the shared sampling settings and how the engine is fed; each stage, judge
and backend declares its own (cai.settings). A YAML file sets any of them, flags override it, and every value
is checked against its declaration, naming file:line and key. A setting given for a plug-in the run does not
use is an error naming both. Code reads its settings typed, as its own dataclass: `config.options(Group)`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cai import plugins
from cai.errors import CaiError
from cai.settings import Setting, build, check_value, declared, setting

T = TypeVar("T")
EXECUTORS = ("stream", "steps", "ray")


@dataclass(frozen=True)
class RunOptions:
    constitution: str = setting(
        "harmless", "Constitution: a YAML file, or the name of a shipped one (code, harmless, helpful, reasoning)."
    )
    prompts: str = setting(
        "", "Prompts: .jsonl ({'prompt'} or {'messages'}), .txt (one per line), .parquet, or a datasets path/name."
    )
    out: str = setting("", "Run folder; rerunning the same command resumes it.")
    stage: str = setting(
        "all",
        "Which stage to run, or all: every stage that runs in all (sl then rl), on one engine; a stage such as "
        "steps (process supervision) runs when named.",
        choices=lambda: [*plugins.stage_order(plugins.names("stage")), "all"],
    )
    prompt_column: str | None = setting(None, "Column holding the prompt (text or messages) in parquet/datasets input.")
    limit: int | None = setting(None, "Use only the first N prompts.", minimum=1)
    model: str = setting(
        "smollm2-135m", "smollm2-135m (embedded), a local Hugging Face folder, or a Hub id.", identity=True
    )
    backend: str = setting(
        "vllm", "Engine backend (registered under the 'cai.backends' entry points).", selects="backend"
    )
    templates: str | None = setting(None, "Folder of Jinja templates that override the shipped ones.")
    seed: int = setting(0, "Seed for principle sampling and generation.", identity=True)
    force: bool = setting(False, "Allow writing into a non-empty folder that is not a cai run.")
    chunk_size: int = setting(
        256,
        "Prompts per shard at most (the unit of resume); with --executor steps also the prompts per batched "
        "engine call, which must be wide enough to keep the engine's batch full.",
        minimum=1,
    )


@dataclass(frozen=True)
class SamplingOptions:
    """Shared by every stage that generates text."""

    max_tokens: int = setting(256, "Max tokens per generated turn.", identity=True, minimum=1)
    temperature: float = setting(
        0.7,
        "Sampling temperature for answers, critiques and revisions.",
        identity=True,
        minimum=0,
        maximum=5,
        temperature=True,
    )
    top_p: float = setting(0.95, "Nucleus sampling.", identity=True, above=0, maximum=1)


@dataclass(frozen=True)
class ExecutorOptions:
    """How a stage's prompts go through the engine (cai.run.executor)."""

    executor: str = setting(
        "stream",
        "stream: each prompt goes on through its stage's steps as soon as its previous request finishes, with "
        "the engine's batch kept full; steps: one batched engine call per step of each chunk (every step "
        "waits for its slowest request); ray: stream inside each actor of a Ray Data pool, one engine per actor "
        "(pip install 'cai[ray]'; docs/servers.md).",
        choices=lambda: EXECUTORS,
    )
    in_flight: int | None = setting(
        None,
        "stream: prompts in flight at once (auto: the engine's limit, --max-num-seqs or --concurrency, and a "
        "quarter more, so a finished request's slot is taken at the next engine step).",
        minimum=1,
        when=("executor", ("stream", "ray")),
    )
    flush_seconds: float = setting(
        60.0,
        "stream: write the prompts finished so far as a shard at least this often (and every --chunk-size "
        "prompts): a killed run redoes at most this much work.",
        above=0,
        when=("executor", ("stream", "ray")),
    )


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide --executor ray runs (cai.run.cluster); none of them changes a row."""

    ray_address: str | None = setting(
        None,
        "ray: the cluster to run on (ray://host:10001 or host:6379); default: the one `ray job submit` runs the job "
        "on (RAY_ADDRESS), else a local cluster started for this run.",
        when=("executor", ("ray",)),
    )
    ray_actors: int = setting(
        1, "ray: actors in the pool, each holding one engine.", minimum=1, when=("executor", ("ray",))
    )
    ray_gpus: float = setting(
        0.0,
        "ray: GPUs per actor (the vLLM backend's --tensor-parallel-size on GPU nodes; 0 on CPU or with --backend "
        "openai).",
        minimum=0,
        when=("executor", ("ray",)),
    )
    ray_cpus: float = setting(
        1.0,
        "ray: CPUs per actor. Ray also sets the actor's OMP_NUM_THREADS to it (at least 1): a CPU engine runs that "
        "many threads, so on CPU nodes give it the cores the engine should use.",
        above=0,
        when=("executor", ("ray",)),
    )
    ray_batch_size: int = setting(
        64,
        "ray: prompts per batch handed to an actor, the unit an actor that dies redoes (two batches run in an actor "
        "at once, so its engine stays full between them).",
        minimum=1,
        when=("executor", ("ray",)),
    )


CORE = (RunOptions, SamplingOptions, ExecutorOptions, RayOptions)

# Settings that were removed, with why and what replaces them: a config or flag that still names one is told so.
RETIRED = {
    "grm_meta_pm": "retired: it gave every judgement of a pair the same preference-model margin, so it kept the "
    "judgements that agreed with the preference model (the PM voting in the GRM's place) and never rated a "
    "judgement's quality; use --grm-meta-rm DIR, a meta reward model trained on judgements (cai judge-data, then "
    "cai train-pm --kind meta)",
}


def _retired(key: str, where: str = "") -> None:
    if key in RETIRED:
        raise CaiError(f"{where}--{key.replace('_', '-')} was {RETIRED[key]}")


@dataclass(frozen=True)
class Declared:
    """Every setting, and for each the plug-ins that use it."""

    settings: dict[str, Setting]
    users: dict[str, list[tuple[str, str]]]  # setting name -> [(kind, plug-in name)]; empty for the core
    groups: dict[type, list[tuple[str, str]]]

    @property
    def selectors(self) -> dict[str, str]:
        """Plug-in kind -> the setting that names the one a run uses (judge -> judge, backend -> backend)."""
        return {s.meta["selects"]: name for name, s in self.settings.items() if s.meta["selects"]}


@functools.cache
def catalogue() -> Declared:
    settings: dict[str, Setting] = {}
    users: dict[str, list[tuple[str, str]]] = {}
    groups: dict[type, list[tuple[str, str]]] = {g: [] for g in CORE}
    for kind in plugins.GROUPS:
        for name, cls in plugins.every(kind).items():
            for group in cls.settings:
                groups.setdefault(group, []).append((kind, name))
    for group, owners in groups.items():
        owner = ", ".join(f"{k} {n}" for k, n in owners) or "run"
        for s in declared(group, owner):
            if s.name in settings and settings[s.name].default != s.default:
                raise CaiError(f"setting {s.name!r} is declared twice, by {settings[s.name].owner} and {owner}")
            settings.setdefault(s.name, s)
            users.setdefault(s.name, []).extend(owners)
    return Declared(settings, users, groups)


class RunConfig:
    """The settings of one run. `RunConfig(rounds=2, judge="cot")`; code reads a typed group with
    `config.options(GroupClass)` (the core's: `config.run`, `config.sampling`). `given` holds the names set
    explicitly (not left at default)."""

    def __init__(self, **values: Any):
        self._set(values, {})

    def _set(self, values: dict[str, Any], where: dict[str, str]) -> None:
        known = catalogue().settings
        for key in values:
            _retired(key)
            if key not in known:
                raise CaiError(f"unknown setting {key!r}")
        self.given = frozenset(values)
        self._values = {name: values.get(name, s.default) for name, s in known.items()}
        self._groups: dict[type, Any] = {}
        for name, s in known.items():
            check_value(s, self._values[name], where.get(name, ""))
        self._check_used(where)

    def values_of(self, groups: tuple[type, ...]) -> dict[str, Any]:
        """The values of the settings that `groups` (a plug-in's settings) declare, by name: for reports."""
        return {s.name: self._values[s.name] for group in groups for s in declared(group, "")}

    @property
    def run(self) -> RunOptions:
        return self.options(RunOptions)

    @property
    def sampling(self) -> SamplingOptions:
        return self.options(SamplingOptions)

    def chosen(self) -> dict[str, str]:
        """Plug-in kind -> the name of the one this run uses."""
        return {kind: self._values[name] for kind, name in catalogue().selectors.items()}

    def _check_used(self, where: dict[str, str]) -> None:
        """A setting of a plug-in the run does not use (another judge's, another backend's) was meant for
        something: refuse it by name rather than ignore it. Stage settings always count: they are part of the run
        folder's identity even when one stage runs alone."""
        d = catalogue()
        chosen = self.chosen()
        for name in sorted(self.given):
            s = d.settings[name]
            users = d.users[name]
            for kind, selected in chosen.items():
                mine = [n for k, n in users if k == kind]
                others = [(k, n) for k, n in users if k != kind]  # a stage or a signal may share the group
                if mine and selected not in mine and not any(self.in_use(k, n) for k, n in others):
                    flag = d.settings[d.selectors[kind]].flag
                    raise CaiError(
                        f"{where.get(name, '')}{s.flag} is a setting of the {' / '.join(mine)} "
                        f"{kind.replace('_', ' ')}, but this run uses {flag} {selected}"
                    )
            if s.meta["when"] is not None:
                key, values = s.meta["when"]
                if self._values[key] not in values and self._values[name] != s.default:
                    flag = "--" + key.replace("_", "-")
                    if values == (True,):  # a switch: the setting means something only when it is on
                        raise CaiError(f"{where.get(name, '')}{s.flag} applies only with {flag}")
                    raise CaiError(
                        f"{where.get(name, '')}{s.flag} applies to {flag} {' or '.join(values)}, but this run uses "
                        f"{flag} {self._values[key]}"
                    )

    def options(self, group: type[T]) -> T:
        """The typed settings group `group` (a plug-in's own dataclass) with this run's values."""
        if group not in self._groups:
            self._groups[group] = build(group, self._values)
        built: T = self._groups[group]
        return built

    def in_use(self, kind: str, name: str) -> bool:
        """Whether the run uses the plug-in: every stage (its settings are the folder's identity even when it runs
        alone), a signal its settings turn on, and the judge, step judge or backend the run chose."""
        if kind == "stage":
            return True
        if kind == "signal":
            return bool(plugins.get("signal", name)(self).enabled())
        return self.chosen().get(kind) == name

    def in_play(self) -> list[type]:
        """The settings groups that shape the rows: the core's, and those of the plug-ins the run uses."""
        return [g for g, owners in catalogue().groups.items() if not owners or any(self.in_use(*o) for o in owners)]

    def temperatures(self, stages: list[str]) -> dict[str, float]:
        """The sampling temperatures (declared as such) that the core and the named stages sample at, by setting."""
        d = catalogue()
        return {
            name: self._values[name]
            for name, s in d.settings.items()
            if s.meta["temperature"]
            and (not d.users[name] or any(k == "stage" and n in stages for k, n in d.users[name]))
        }

    def identity(self, constitution_sha: str, templates_sha: str) -> dict:
        """The settings that decide what a row contains. A run folder holds rows of one identity only:
        resuming with a different one would mix incompatible data, so it is refused."""
        out: dict[str, Any] = {"constitution_sha256": constitution_sha, "templates_sha256": templates_sha}
        for group in self.in_play():
            for s in declared(group, ""):
                if s.meta["identity"]:
                    value = self._values[s.name]
                    out[s.name] = str(Path(value).resolve()) if s.meta["path"] and value else value
        return out

    @staticmethod
    def identity_defaults() -> dict[str, Any]:
        """Every identity setting's default: a run folder written before a setting existed (or by a run whose
        judge did not use it) holds rows made as with the default, so a resume at the default is the same run."""
        return {name: s.default for name, s in catalogue().settings.items() if s.meta["identity"]}

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **values: Any) -> RunConfig:
        """This run's given settings with `values` on top (checked again)."""
        return RunConfig(**{**{k: self._values[k] for k in self.given}, **values})

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={self._values[k]!r}" for k in sorted(self.given))
        return f"RunConfig({given})"


def load(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """A RunConfig from a YAML file (optional) with flag values on top. Flags given as None are unset."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    known = catalogue().settings
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CaiError(f"{path}: config file not found") from None
        except UnicodeDecodeError:
            raise CaiError(f"{path}: not UTF-8 text") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            raise CaiError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {e.problem}") from None
        if node is not None:
            if not isinstance(node, yaml.MappingNode):
                raise CaiError(f"{path}:1: a run config must be a mapping of settings")
            for key_node, value_node in node.value:
                key = key_node.value.replace("-", "_")
                line = key_node.start_mark.line + 1
                _retired(key, f"{path}:{line}: ")
                if key not in known:
                    raise CaiError(f"{path}:{line}: unknown key {key_node.value!r}")
                values[key] = yaml.SafeLoader(text).construct_object(value_node, deep=True)
                where[key] = f"{path}:{line}: "
    for key, value in overrides.items():
        if key in RETIRED:  # the CLI keeps a retired flag hidden, to say why when it is given
            if value is not None:
                _retired(key)
            continue
        if key not in known:
            raise CaiError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = value
            where.pop(key, None)
    config = RunConfig.__new__(RunConfig)
    config._set(values, where)
    return config
