"""What the soak counts: its clients' tallies, and the errors and warnings its run logs."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["LogTally", "Tallies", "tally_logs"]


@dataclass
class Tallies:
    """What every client adds to (one event loop: no locks)."""

    attempted: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    resumes: int = 0
    missed: int = 0
    gap_lost: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    audio_bytes: int = 0
    text_deltas: int = 0
    leave_seq: dict[str, int] = field(default_factory=dict)
    """The newest seq of each session when its client left."""

    def outcome(self, kind: str, what: str, ok: bool) -> None:
        self.outcomes.setdefault(kind, Counter())[what] += 1
        if ok:
            self.completed[kind] += 1


class LogTally(logging.Handler):
    """Counts, from every logger, ERROR records that carry a traceback, and warnings by logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.tracebacks = 0
        self.samples: list[str] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.warnings: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{record.name}: {record.getMessage()}"[:300])
            if record.exc_info:
                self.tracebacks += 1
                if len(self.samples) < 5:
                    exc = record.exc_info[1]
                    self.samples.append(f"{record.name}: {record.getMessage()[:200]} ({exc!r})"[:400])
        else:
            self.warnings[record.name] += 1


@contextlib.contextmanager
def tally_logs() -> Iterator[LogTally]:
    """A `LogTally` on the root logger for the length of the block."""
    tally = LogTally()
    root = logging.getLogger()
    root.addHandler(tally)
    try:
        yield tally
    finally:
        root.removeHandler(tally)
