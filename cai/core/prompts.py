"""One sandboxed Jinja environment for the prompt templates, and the helpers that render them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cai.errors import CaiError

SHIPPED = Path(str(files("cai").joinpath("templates")))  # package data: found wherever cai is installed


@dataclass(frozen=True)
class TemplateSpec:
    """A template a stage or judge renders, with sample values to render it once before the engine starts
    (so a typo in a user's template fails in a second, not after the model has loaded), and the text its
    output must end with where the next token is read (an answer prefix such as `The answer is: (`)."""

    name: str
    sample: dict = field(default_factory=dict)
    ends_with: str | None = None
    requires: tuple[str, ...] = ()  # variables whose (sample) value must appear in the rendered text


SAMPLE_PRINCIPLE = {"id": "p", "critique": "c", "revision": "r", "compare": "q"}
SAMPLE_CONVERSATION = [{"role": "user", "content": "u"}]


class Templates:
    """The run's templates: a user folder (optional) in front of the shipped ones.

    Prompts, answers and critiques only ever enter as *values*: Jinja never parses a value as template
    code, so `{{ 7*7 }}` inside a prompt stays literally `{{ 7*7 }}`. The sandbox stops a hostile
    user template from reaching Python internals (`__class__`, `__globals__`, ...), and StrictUndefined
    turns a misspelled variable into an error instead of an empty string.
    """

    def __init__(self, folder: str | Path | None = None):
        dirs = [str(SHIPPED)]
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            if not self.folder.is_dir():
                raise CaiError(f"--templates {self.folder}: not a folder")
            dirs.insert(0, str(self.folder))
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(dirs),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, **values: object) -> str:
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
        if self.folder is not None and (self.folder / name).is_file():
            return self.folder / name
        return SHIPPED / name

    def check(self, specs: Iterable[TemplateSpec] | None = None) -> None:
        """Render each template (default: every installed stage's and judge's) once with its sample values;
        raises CaiError on the first problem."""
        for spec in every_spec() if specs is None else specs:
            text = self.render(spec.name, **spec.sample)
            for var in spec.requires:
                if str(spec.sample[var]) not in text:
                    raise CaiError(
                        f"{self.path(spec.name)}: must show {{{{ {var} }}}}: the model cannot judge what "
                        "it is not shown"
                    )
            if spec.ends_with and not text.endswith(spec.ends_with):
                raise CaiError(
                    f"{self.path(spec.name)}: must end with {spec.ends_with!r} so the answer that is "
                    "read next follows it directly"
                )

    def sha256(self, specs: Iterable[TemplateSpec] | None = None) -> str:
        """One hash over the effective text of the given templates (default: all), for the run identity."""
        h = hashlib.sha256()
        for name in sorted({s.name for s in (every_spec() if specs is None else specs)}):
            h.update(name.encode() + b"\0" + self.path(name).read_bytes() + b"\0")
        return h.hexdigest()


def every_spec() -> list[TemplateSpec]:
    """The templates of every installed stage and judge."""
    from cai import plugins

    return [spec for kind in ("stage", "judge") for cls in plugins.every(kind).values() for spec in cls.templates]
