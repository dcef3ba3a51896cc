"""Rules checked by code (DeepSeek-R1's rule-based rewards): pure functions over text, each bounded in time.

A principle of the constitution may carry `rules:`; each rule scores a text in [0, 1] and says whether it
passed. The same rules annotate the SL trace, vote in the RL stage, and become reward functions for online
RL (cai.rewards). A rule reads the part of the text its `scope` names (cai.core.answer: the answer after the
reasoning, the reasoning, or all of it; accuracy reads the answer and language the reasoning unless told).

A rule that cannot apply (accuracy without a reference) gives None. A check that could not finish (timed out,
errored) is **unknown**: its result carries the reason in `error`, and every consumer leaves it out and counts
it (hard rules, rule votes, regressions, rewards, stats): it is never a pass, and never a win for the other side.
Every check is bounded on any thread: regular expressions by the `regex` module's timeout, math-verify in a
worker process killed at its deadline (cai.core.bounded), code in a sandbox with limits (cai.core.sandbox).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cai.core import answer

KINDS = (
    "must_match",
    "must_not_match",
    "format",
    "max_words",
    "max_chars",
    "max_paragraph_words",
    "no_code_block",
    "language",
    "accuracy",
)
# Named formats; any other `format` value is a regular expression the whole text must match (groups allowed).
FORMATS = {
    # DeepSeek-R1: the reasoning inside <think>...</think>, then the answer.
    "think-answer": r"\s*<think>(?P<reasoning>(?:(?!</?think>).)+)</think>\s*(?!.*</?think>)(?P<answer>\S.*)",
    # A final answer in \boxed{...} somewhere after the working.
    "boxed-answer": r".*\\boxed\{.+\}.*",
}
# Formats checked by code, not by a pattern: `boxed`, one boxed answer with balanced braces (nested ones too).
CODE_FORMATS: dict[str, Callable[[str], bool]] = {"boxed": answer.has_box}
FLAGS = ("ignorecase", "multiline", "dotall")
ACCURACY = ("math", "exact", "code")
# What a rule reads unless its `scope` says otherwise, as DeepSeek-R1 does: the answer's accuracy, the reasoning's
# language; everything else reads all of the text.
DEFAULT_SCOPE = {"accuracy": "answer", "language": "reasoning"}
# The languages a `language` rule tells apart by default: widely used ones. A rule may list its own (`among`).
COMMON_LANGUAGES = (
    "en",
    "de",
    "fr",
    "es",
    "it",
    "pt",
    "nl",
    "sv",
    "pl",
    "cs",
    "ru",
    "uk",
    "el",
    "tr",
    "ar",
    "he",
    "fa",
    "hi",
    "bn",
    "zh",
    "ja",
    "ko",
    "vi",
    "id",
    "th",
)
SECONDS = 0.5  # the time one pattern may take on one text; one that backtracks past it is unknown
MATH_SECONDS = 6.0  # a math-verify comparison, in a worker process killed at this deadline (cai.core.bounded)
_SENTENCE = re.compile(r"(?<=[.!?。！？\n])\s+|(?<=[。！？])")
# DeepSeek-R1 filtered its rejection-sampled SFT data for long paragraphs and code blocks: a paragraph is a
# blank-line separated block; a code block opens with a Markdown fence (``` or ~~~, indented at most 3 spaces),
# closed or not (an unclosed fence is still code the reader has to read as code).
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_CODE_FENCE = re.compile(r"^[ ]{0,3}(?:```|~~~)", re.MULTILINE)


@dataclass(frozen=True)
class Rule:
    """One rule of a principle. `id` is `<principle>.<kind>` (numbered when a principle has two of a kind)."""

    id: str
    kind: str
    value: Any  # the pattern, format, limit, language code or accuracy mode
    weight: float = 1.0
    hard: bool = False  # a hard rule decides a pair on its own, and its breaking is flagged in the SL trace
    flags: tuple[str, ...] = ()  # must_match, must_not_match, format: regex flags
    threshold: float | None = None  # language: the share of the words that must be in the language
    among: tuple[str, ...] = ()  # language: the languages to tell apart (default COMMON_LANGUAGES)
    scope: str = "all"  # the part of the text it reads: answer, reasoning or all (cai.core.answer)
    sandbox: str = "bubblewrap"  # accuracy code: where programs run (a weaker one only when named: cai.core.sandbox)
    all_tests: bool = False  # accuracy code: 1 only when every test passes (the first failure stops the rest)

    def describe(self) -> str:
        extra = f" (share >= {self.threshold:g})" if self.threshold is not None else ""
        where = f", of the {self.scope}" if self.scope != DEFAULT_SCOPE.get(self.kind, "all") else ""
        return f"{self.kind}: {self.value}{extra}{where}, weight {self.weight:g}" + (", hard" if self.hard else "")


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    score: float  # in [0, 1]
    error: str | None = None  # why the check could not finish (timed out, errored): the result is unknown

    @property
    def known(self) -> bool:
        """False for a check that could not finish: left out and counted by every consumer, never a pass."""
        return self.error is None

    def row(self) -> dict:
        return {"rule": self.rule, "passed": self.passed, "score": self.score, "error": self.error}


# -- validation (called by the constitution loader; a ValueError's message is shown with file:line) -------------
def build(principle: str, index: int, spec: dict[str, Any]) -> Rule:
    """A Rule from its YAML mapping (already type-checked as a mapping of scalars and lists)."""
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        raise ValueError(f"a rule names exactly one of {', '.join(KINDS)}; got {', '.join(kinds) or 'none'}")
    kind = kinds[0]
    allowed = {kind, "weight", "hard", "scope"} | {
        "must_match": {"flags"},
        "must_not_match": {"flags"},
        "format": {"flags"},
        "language": {"threshold", "among"},
        "accuracy": {"sandbox", "all_tests"},
    }.get(kind, set())
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"rule {kind!r}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    value = spec[kind]
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ValueError(f"rule {kind!r}: 'weight' must be a positive number, got {weight!r}")
    hard = spec.get("hard", False)
    if not isinstance(hard, bool):
        raise ValueError(f"rule {kind!r}: 'hard' must be true or false, got {hard!r}")
    flags = tuple(spec.get("flags", ()))
    for f in flags:
        if f not in FLAGS:
            raise ValueError(f"rule {kind!r}: unknown flag {f!r} (allowed: {', '.join(FLAGS)})")
    scope = spec.get("scope", DEFAULT_SCOPE.get(kind, "all"))
    if scope not in answer.SCOPES:
        raise ValueError(f"rule {kind!r}: 'scope' must be one of {', '.join(answer.SCOPES)}, got {scope!r}")
    extra = CHECKS[kind](kind, value, spec, flags)
    return Rule(
        f"{principle}.{kind}" + (f"{index}" if index else ""),
        kind,
        value,
        float(weight),
        hard,
        flags,
        extra.get("threshold"),
        extra.get("among", ()),
        scope,
        extra.get("sandbox", "bubblewrap"),
        extra.get("all_tests", False),
    )


def _pattern(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    if not isinstance(value, str) or not value:
        named = ", ".join([*FORMATS, *CODE_FORMATS])
        raise ValueError(f"rule {kind!r}: expected a regular expression (or a format: {named})")
    try:
        compiled(value, flags)
    except Exception as e:  # the regex module raises its own error type
        raise ValueError(f"rule {kind!r}: bad regular expression {value!r}: {e}") from None
    return {}


def _format(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    """A named format, else a regular expression."""
    named = isinstance(value, str) and (value in FORMATS or value in CODE_FORMATS)
    return {} if named else _pattern(kind, value, spec, flags)


def _count(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rule {kind!r}: expected a whole number of at least 1, got {value!r}")
    return {}


def _true(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    if value is not True:  # `no_code_block: false` would be a rule that checks nothing: say so instead
        raise ValueError(f"rule {kind!r}: expected true (leave the rule out to allow code blocks), got {value!r}")
    return {}


def _language_rule(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    among = tuple(spec.get("among", COMMON_LANGUAGES))
    for code in (value, *among):
        _language(code)  # raises ValueError naming an unknown code
    if value not in among:
        among = (value, *among)
    threshold = spec.get("threshold")
    if threshold is None:
        raise ValueError(f"rule 'language': missing 'threshold' (the share of the text in {value!r}, 0 to 1)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"rule 'language': 'threshold' must be in (0, 1], got {threshold!r}")
    return {"threshold": float(threshold), "among": among}


def _accuracy(kind: str, value: Any, spec: dict[str, Any], flags: tuple[str, ...]) -> dict:
    if value not in ACCURACY:
        raise ValueError(f"rule 'accuracy': expected one of {', '.join(ACCURACY)}, got {value!r}")
    code = {k: spec[k] for k in ("sandbox", "all_tests") if k in spec}
    if code and value != "code":
        raise ValueError(f"rule 'accuracy': {next(iter(code))!r} is for 'accuracy: code' only")
    from cai.core.sandbox import SANDBOXES

    if code.get("sandbox", "bubblewrap") not in SANDBOXES:
        raise ValueError(f"rule 'accuracy': 'sandbox' must be one of {', '.join(SANDBOXES)}, got {code['sandbox']!r}")
    if not isinstance(code.get("all_tests", False), bool):
        raise ValueError(f"rule 'accuracy': 'all_tests' must be true or false, got {code['all_tests']!r}")
    return code


# Each kind's check of its value (and its own keys); returns what the Rule keeps beyond the common fields.
CHECKS: dict[str, Callable[[str, Any, dict[str, Any], tuple[str, ...]], dict]] = {
    "must_match": _pattern,
    "must_not_match": _pattern,
    "format": _format,
    "max_words": _count,
    "max_chars": _count,
    "max_paragraph_words": _count,
    "no_code_block": _true,
    "language": _language_rule,
    "accuracy": _accuracy,
}


@functools.lru_cache(maxsize=512)
def compiled(pattern: str, flags: tuple[str, ...] = ()) -> Any:
    import regex

    bits = 0
    for f in flags:
        bits |= {"ignorecase": regex.IGNORECASE, "multiline": regex.MULTILINE, "dotall": regex.DOTALL}[f]
    return regex.compile(pattern, bits | regex.VERSION0)


# -- checking ---------------------------------------------------------------------------------------------------
def check(rule: Rule, text: str, reference: str | None = None) -> RuleResult | None:
    """Score `text` under `rule`; None where the rule does not apply (accuracy with no reference). A check that
    could not finish gives an unknown result with the reason."""
    if rule.kind == "accuracy" and reference is None:
        return None
    if not text.strip():  # an empty answer earns nothing: "no long words, no other language" must not pay for it
        return RuleResult(rule.id, False, 0.0)
    scoped = answer.scoped(text, rule.scope)
    try:
        try:
            score = _score(rule, scoped, reference)
        except TimeoutError:
            # The deadlines are wall time: on a busy machine (the executor's threads, other work) a check that takes
            # a fraction of its budget can miss it. Once more with a fresh budget, so a reward does not depend on
            # the load; a check that misses both is slow on its own and unknown.
            score = _score(rule, scoped, reference)
    except TimeoutError:
        seconds = MATH_SECONDS if rule.kind == "accuracy" else SECONDS
        return RuleResult(rule.id, False, 0.0, f"timed out after {seconds:g}s")
    except Exception as e:  # a checker that errs on odd text must not take the run down; the reason is kept
        return RuleResult(rule.id, False, 0.0, f"{type(e).__name__}: {str(e)[:200]}")
    passed = score >= rule.threshold if rule.kind == "language" and rule.threshold is not None else score == 1.0
    return RuleResult(rule.id, passed, score)


def check_all(rules: tuple[Rule, ...], text: str, reference: str | None = None) -> list[RuleResult]:
    return [r for r in (check(rule, text, reference) for rule in rules) if r is not None]


def total(results: list[RuleResult], rules: dict[str, Rule]) -> tuple[float, float]:
    """(weight of the hard rules passed, weighted score of all known): larger is better, hard rules first."""
    known = [r for r in results if r.known]
    hard = sum(rules[r.rule].weight for r in known if rules[r.rule].hard and r.passed)
    return hard, sum(rules[r.rule].weight * r.score for r in known)


def mean_score(results: list[RuleResult], rules: dict[str, Rule]) -> float | None:
    """The weighted mean score of the known results (a reward); None when no rule applied or none finished."""
    known = [r for r in results if r.known]
    total_weight = sum(rules[r.rule].weight for r in known)
    return sum(rules[r.rule].weight * r.score for r in known) / total_weight if total_weight else None


def _score(rule: Rule, text: str, reference: str | None) -> float:
    k = rule.kind
    if k in ("must_match", "must_not_match"):
        found = compiled(rule.value, rule.flags).search(text, timeout=SECONDS) is not None
        return float(found == (k == "must_match"))
    if k == "format":
        if rule.value in CODE_FORMATS:
            return float(CODE_FORMATS[rule.value](text))
        pattern = FORMATS.get(rule.value, rule.value)
        flags = ("dotall", *rule.flags) if rule.value in FORMATS else rule.flags
        return float(compiled(pattern, tuple(flags)).fullmatch(text, timeout=SECONDS) is not None)
    if k == "max_words":
        return float(len(text.split()) <= rule.value)
    if k == "max_chars":
        return float(len(text) <= rule.value)
    if k == "max_paragraph_words":
        return float(longest_paragraph(text) <= rule.value)
    if k == "no_code_block":
        return float(_CODE_FENCE.search(text) is None)
    if k == "language":
        return language_share(text, rule.value, rule.among)
    if k == "accuracy":
        assert reference is not None
        if rule.value == "code":
            return code_score(text, reference, rule)
        return float(accurate(text, reference, rule.value))
    raise ValueError(f"unknown rule kind {k!r}")


def longest_paragraph(text: str) -> int:
    """The words in `text`'s longest paragraph (blank-line separated block); 0 for a text with none."""
    return max((len(p.split()) for p in _PARAGRAPH.split(text)), default=0)


# -- language ---------------------------------------------------------------------------------------------------
def _language(code: str) -> Any:
    from lingua import IsoCode639_1, Language

    iso = getattr(IsoCode639_1, str(code).upper(), None)
    if iso is None:
        raise ValueError(f"unknown language code {code!r} (ISO 639-1, such as en, de, zh)")
    return Language.from_iso_code_639_1(iso)


@functools.lru_cache(maxsize=4)
def _detector(among: tuple[str, ...]) -> Any:
    """One detector per language set and process (high-accuracy models of those languages only: loading
    every language lingua knows takes seconds and over 1 GB)."""
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(*(_language(c) for c in among)).build()


def language_share(text: str, code: str, among: tuple[str, ...] = COMMON_LANGUAGES) -> float:
    """The share of `text`'s words in sentences written in `code` (DeepSeek-R1's language consistency: the
    proportion of target-language words). Sentences are told apart one by one (a mixed text is scored by how
    much of it is in the language); sentences with no detectable language (numbers, formulas, code) count for
    neither side. No language at all scores 1."""
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    if not sentences:
        return 1.0
    target = _language(code)
    found = _detector(tuple(sorted(set(among) | {code}))).detect_languages_in_parallel_of(sentences)
    sized = [(len(s.split()), lang) for s, lang in zip(sentences, found, strict=True) if lang is not None]
    words = sum(n for n, _ in sized)
    return sum(n for n, lang in sized if lang == target) / words if words else 1.0


# -- accuracy ---------------------------------------------------------------------------------------------------
_WORD = re.compile(r"(?<!\\)\b[^\W\d_]{2,}")  # two or more letters, not a LaTeX command such as \frac


def final_answer(text: str) -> str | None:
    """The final answer of `text` as the accuracy rule reads it: from the answer after the reasoning
    (cai.core.answer)."""
    return answer.final(answer.scoped(text, "answer"))


def looks_like_math(reference: str) -> bool:
    """Numbers, LaTeX and single-letter variables; not words. (math-verify would read a word as a product of
    one-letter symbols, and find "ab" equal to "ba".)"""
    return _WORD.search(reference) is None


def _normal(s: str) -> str:
    return " ".join(s.strip().strip(".").lower().split())


def accurate(text: str, reference: str, mode: str = "math") -> bool:
    """Whether the final answer in `text` (already scoped) equals `reference`: the same text (case, spacing and a
    final full stop aside), or with mode math, equivalent by Hugging Face's math-verify (symbolic and numeric
    equivalence of LaTeX or plain expressions), run in a worker process killed at MATH_SECONDS (TimeoutError)."""
    given = answer.final(text)
    if given is None:
        return False
    return equivalent(given, reference, mode)


def equivalent(given: str, reference: str, mode: str = "math") -> bool:
    """Whether two final answers are the same: as text (case, spacing and a final full stop aside), or with mode
    math, by math-verify in a bounded worker (TimeoutError past MATH_SECONDS). Majority vote groups answers by it."""
    if _normal(given) == _normal(reference):
        return True
    if mode == "math" and looks_like_math(reference):
        from cai.core import bounded

        return bool(bounded.pool().call("math_equal", given, reference, seconds=MATH_SECONDS))
    return False


def notes(rules: tuple[Rule, ...]) -> list[str]:
    """What a run summary (and the dataset card) says of how its code rules ran: which sandbox, and what it cuts off."""
    from cai.core import sandbox

    used = dict.fromkeys(r.sandbox for r in rules if r.kind == "accuracy" and r.value == "code")
    return [f"code sandbox   {sandbox.describe(name)}" for name in used]


def require_sandbox(rules: tuple[Rule, ...]) -> None:
    """Refuse (CaiError, one line, before any engine starts) code rules whose sandbox cannot run here: never a
    silently weaker one."""
    from cai.core import sandbox
    from cai.errors import CaiError

    for r in rules:
        if r.kind == "accuracy" and r.value == "code" and (why := sandbox.unavailable(r.sandbox)):
            raise CaiError(
                f"rule {r.id}: 'accuracy: code' runs programs in {r.sandbox}, and {why}; "
                "to accept a weaker sandbox, name it on the rule (sandbox: rlimits)"
            )


def code_score(text: str, reference: str, rule: Rule | None = None) -> float:
    """The share of the prompt's tests (`reference`: their JSON, from the record's `tests`) that the answer's last
    Python code block passes, each run in the rule's sandbox (cai.core.sandbox); 0 without a code block."""
    from cai.core import sandbox

    program = sandbox.code_of(text)
    if program is None:
        return 0.0
    tests = sandbox.parse_tests(reference)
    if rule is None:
        return sandbox.run_tests(program, tests).score
    return sandbox.run_tests(program, tests, rule.sandbox, rule.all_tests).score
