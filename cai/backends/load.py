"""How full an engine was: the time-weighted mean of its running requests over its limit.

A step-synchronous pipeline drains the engine at the end of every step (the batch waits for its slowest
request), which shows here as a mean well below the limit; a streaming one keeps it near the limit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    seconds: float  # the span measured
    mean_running: float  # requests running, averaged over the span's time
    limit: int  # the most the engine runs at once (--max-num-seqs, --concurrency)
    source: str  # where the counts come from
    drafted: int = 0  # speculative decoding: tokens proposed ...
    accepted: int = 0  # ... and accepted by the model

    @property
    def occupancy(self) -> float:
        return self.mean_running / self.limit if self.limit else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def describe(self) -> str:
        text = f"{self.occupancy:.2f} ({self.mean_running:.1f} of {self.limit} running on average, {self.source})"
        if self.acceptance is not None:
            text += f"; speculative tokens accepted {self.acceptance:.0%} ({self.accepted}/{self.drafted})"
        return text


class Meter:
    """Running-request counts sampled by the engine loop, integrated over time. `start()` opens a span,
    `read()` closes it; samples arrive from the engine's thread, reads from the caller's."""

    def __init__(self, limit: int, source: str):
        self.limit, self.source = limit, source
        self._lock = threading.Lock()
        self._running = 0
        self._since = time.monotonic()
        self.start()

    def start(self) -> None:
        with self._lock:
            self._t0 = self._since = time.monotonic()
            self._area = 0.0
            self._drafted = self._accepted = 0

    def sample(self, running: int) -> None:
        """The engine now runs `running` requests (until the next sample)."""
        with self._lock:
            now = time.monotonic()
            self._area += self._running * (now - self._since)
            self._running, self._since = running, now

    def speculated(self, drafted: int, accepted: int) -> None:
        with self._lock:
            self._drafted += drafted
            self._accepted += accepted

    def read(self) -> Load:
        with self._lock:
            now = time.monotonic()
            area = self._area + self._running * (now - self._since)
            span = now - self._t0
            return Load(span, area / span if span else 0.0, self.limit, self.source, self._drafted, self._accepted)
