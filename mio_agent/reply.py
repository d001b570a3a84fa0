"""One reply of a conversation: how it is asked for (ReplyOptions), its streamed events (ReplyStream) and its result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

from mio_agent.conversation import Part
from mio_agent.parser import ParserEvent
from mio_agent.reply_job import ReplyJob, StopReason
from mio_agent.sampling import SamplingParams

__all__ = ["Post", "ReplyOptions", "ReplyResult", "ReplyStream"]

Post = Callable[[int, list[ParserEvent]], None]
"""How the worker hands over events: (ids generated so far, the events they completed)."""


@dataclass(frozen=True, slots=True)
class ReplyOptions:
    """How one reply is generated; None fields fall back to the engine's defaults."""

    preset: str | None = None
    max_new_tokens: int | None = None
    sampling: SamplingParams | None = None
    allow_text: bool = True
    allow_speech: bool = True
    allow_image: bool = True
    min_speech_codes: int = 1
    max_speech_codes: int | None = None
    # False: speech blocks end after their content codes (None: the engine's `voice_timbre`)
    timbre: bool | None = None


@dataclass(slots=True)
class ReplyResult:
    """What one reply produced and what it cost."""

    reason: StopReason
    token_ids: tuple[int, ...]
    kept_ids: tuple[int, ...]
    parts: tuple[Part, ...]
    prompt_tokens: int
    prefill_tokens: int
    prefill_s: float
    first_token_s: float | None
    decode_tokens: int
    decode_s: float
    dropped_turns: int
    error: str | None = None


_END = object()


class ReplyStream:
    """Async iterator over one reply's parser events; `cancel()` stops it between two decode steps.

    Use it as `async with engine.reply(turn) as stream: async for ev in stream: ...`; leaving the
    block early cancels the reply. `result` is set once the reply has ended and been committed.
    """

    def __init__(
        self,
        job: ReplyJob,
        prompt_tokens: int,
        dropped: int,
        *,
        executor: Executor,
        generate: Callable[[ReplyJob, Post], None],
        commit: Callable[[ReplyJob, int, int, int], ReplyResult],
    ) -> None:
        self._job = job
        self._generate = generate
        self._commit = commit
        self._prompt_tokens = prompt_tokens
        self._dropped = dropped
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._buffer: list[ParserEvent] = []
        self._delivered = 0
        self.result: ReplyResult | None = None
        self._future = self._loop.run_in_executor(executor, self._run)

    def _run(self) -> None:
        job = self._job

        def post(n: int, events: list[ParserEvent]) -> None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (n, events))

        self._generate(job, post)
        finish_reason: Literal["stop", "length", "cancelled"] = (
            "cancelled" if job.reason in ("cancelled", "error") else job.reason  # type: ignore[assignment]
        )
        tail = [] if job.reason == "stop" else job.parser.finish(finish_reason)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (len(job.generated), tail))
        self._loop.call_soon_threadsafe(self._queue.put_nowait, _END)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> ParserEvent:
        while True:
            # after a cancel nothing more is handed out: the history already holds what was
            if self._job.cancel.is_set() and self.result is not None:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.pop(0)
            if self.result is not None:
                raise StopAsyncIteration
            item = await self._queue.get()
            if item is _END:
                await self._finalize(self._delivered)
                continue
            n, events = item
            self._delivered = n
            self._buffer.extend(events)

    async def _finalize(self, delivered: int) -> ReplyResult:
        await asyncio.shield(self._future)
        # the consumer (at the end of the stream) and `cancel` may both get here: commit once
        if self.result is None:
            self.result = self._commit(self._job, delivered, self._prompt_tokens, self._dropped)
        return self.result

    async def cancel(self) -> ReplyResult:
        """Stop generating; the history keeps exactly the tokens whose events were already handed out."""
        self._job.cancel.set()
        return await self._finalize(self._delivered)

    async def wait(self) -> ReplyResult:
        """Consume the rest of the reply and return its result."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    @property
    def delivered_tokens(self) -> int:
        return self._delivered

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.result is None:
            await self.cancel()
