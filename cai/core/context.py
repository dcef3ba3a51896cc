"""RunContext: what every stage and judge of one run shares (settings, constitution, templates, store, engine)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.errors import CaiError

if TYPE_CHECKING:
    from cai.backends.base import Backend
    from cai.config import RunConfig
    from cai.core.constitution import Constitution
    from cai.core.prompts import Templates
    from cai.core.store import RunStore


@dataclass(frozen=True)
class RunContext:
    config: RunConfig
    constitution: Constitution
    templates: Templates
    store: RunStore | None = None  # None for a run that keeps nothing on disk (an evaluation without --out)
    backend: Backend | None = None  # None until the engine starts, and in runs whose stages need none
    log: Callable[[str], None] = print

    @property
    def engine(self) -> Backend:
        if self.backend is None:  # a stage that said it needs no engine asked for one
            raise CaiError("this step needs the engine, but none was started")
        return self.backend
