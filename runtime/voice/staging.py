"""The prefill of a user turn while it is spoken: one owner that starts it, waits for it and withdraws it."""

from __future__ import annotations

import asyncio
import contextlib
import time

from mio_agent.conversation import Turn
from mio_agent.engine import ConversationEngine

__all__ = ["TurnPrefill"]


class TurnPrefill:
    """Stages a growing utterance in the engine and prefills it in the background, one prefill at a time.

    The session asks it to `stage` the turn so far (every 200 ms of new speech codes), to `settle`
    before the turn is used or the history is cut (a prefill must not run under either), and to
    `withdraw` what was staged for an utterance that did not become a turn.
    """

    def __init__(self, engine: ConversationEngine) -> None:
        self._engine = engine
        self._task: asyncio.Task[tuple[int, float]] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def can_stage(self) -> bool:
        """Whether a new prefill may start now (none runs, and the engine is not replying)."""
        return not self.running and not self._engine.busy

    def stage(self, turn: Turn) -> None:
        """Stage `turn` (the utterance so far) and start prefilling it."""
        self._engine.stage_turn(turn)
        self._task = asyncio.create_task(self._engine.prefill())

    def new_utterance(self) -> None:
        """A new utterance began: what the last one staged is not awaited for it (it may still run)."""
        if not self.running:
            self._task = None

    async def settle(self) -> float:
        """Wait for the running prefill; the seconds waited. Its failure is raised (the turn's ids would
        not be in the cache)."""
        task, self._task = self._task, None
        if task is None:
            return 0.0
        t0 = time.perf_counter()
        await task
        return time.perf_counter() - t0

    async def quiesce(self) -> None:
        """Wait for a running prefill to end, whatever its outcome (before the history is cut)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task})

    def withdraw(self) -> None:
        """Unstage what an utterance that is no turn staged (when no reply or prefill is using it)."""
        engine = self._engine
        with contextlib.suppress(Exception):
            if engine.staged is not None and not engine.busy:
                engine.stage_turn(None)
