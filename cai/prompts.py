"""One sandboxed Jinja environment for the prompt templates, and the helpers that render them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cai.errors import CaiError

SHIPPED = Path(__file__).resolve().parent.parent / "templates"

# Every template a run may render, with sample values used to check it before the engine starts, so
# that a typo in a user's template fails in a second, not after the model has loaded.
_SAMPLE_PRINCIPLE = {"id": "p", "critique": "c", "revision": "r", "compare": "q"}
_CONVERSATION = [{"role": "user", "content": "u"}]
TEMPLATES = {
    "critique.j2": {"principle": _SAMPLE_PRINCIPLE, "round": 1},
    "revision.j2": {"principle": _SAMPLE_PRINCIPLE, "round": 1},
    "compare.j2": {"conversation": _CONVERSATION, "principle": _SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"},
    "compare_answer.j2": {},
    "compare_cot.j2": {"conversation": _CONVERSATION, "principle": _SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"},
    "compare_cot_reasoning.j2": {},
    "compare_cot_answer.j2": {"reasoning": "r"},
    "grm.j2": {"conversation": _CONVERSATION, "principles": ["p"], "response_1": "a", "response_2": "b"},
    "grm_reasoning.j2": {},
    "grm_scores.j2": {"reasoning": "r"},
    "grm_meta.j2": {"judgement": "j"},
    "grm_meta_prefix.j2": {},
}


class Templates:
    """The run's templates: a user folder (optional) in front of the shipped ones.

    Prompts, answers and critiques only ever enter as *values*: Jinja never parses a value as template
    code, so `{{ 7*7 }}` inside a prompt stays literally `{{ 7*7 }}`. The sandbox stops a hostile
    user template from reaching Python internals (`__class__`, `__globals__`, ...), and StrictUndefined
    turns a misspelled variable into an error instead of an empty string.
    """

    def __init__(self, folder: str | Path | None = None):
        dirs = [str(SHIPPED)]
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise CaiError(f"--templates {folder}: not a folder")
            dirs.insert(0, str(folder))
        self.folder = folder
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(dirs),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, **values) -> str:
        try:
            template = self.env.get_template(name)
            return template.render(**values).strip()
        except jinja2.TemplateSyntaxError as e:
            raise CaiError(f"{e.filename or name}:{e.lineno}: template syntax error: {e.message}") from None
        except jinja2.TemplateNotFound:
            raise CaiError(f"template {name!r} not found in {self.folder or SHIPPED}") from None
        except jinja2.UndefinedError as e:
            raise CaiError(f"{self.path(name)}: {e.message}") from None
        except jinja2.exceptions.SecurityError as e:
            raise CaiError(f"{self.path(name)}: refused by the template sandbox: {e}") from None

    def path(self, name: str) -> Path:
        if self.folder is not None and (Path(self.folder) / name).is_file():
            return Path(self.folder) / name
        return SHIPPED / name

    def check(self, names=None) -> None:
        """Render each template once with sample values; raises CaiError on the first problem."""
        for name in names or TEMPLATES:
            text = self.render(name, **TEMPLATES[name])
            if name.endswith("_answer.j2") and not text.endswith("("):
                raise CaiError(f"{self.path(name)}: must end with '(' so the next token is the option letter")
            if name == "grm_scores.j2" and not text.endswith("[["):
                raise CaiError(f"{self.path(name)}: must end with '[[' so the scores follow in a fixed format")

    def sha256(self) -> str:
        """One hash over the effective text of every template, recorded in the run manifest."""
        h = hashlib.sha256()
        for name in sorted(TEMPLATES):
            h.update(name.encode() + b"\0" + self.path(name).read_bytes() + b"\0")
        return h.hexdigest()
