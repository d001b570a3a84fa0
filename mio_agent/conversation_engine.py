"""The seam between the runtime and whatever decodes MIO: the interface a conversation engine implements.

The local `ConversationEngine` (mio_agent/engine.py) is one implementation. A remote one, e.g.
backed by an inference server that serves MIO's Llama checkpoint with continuous batching and
prefix caching (docs/scaling.md), implements the same methods with the same contract, and the
sessions, capabilities, front ends and tests above it do not change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mio_agent.conversation import Mode, Part, Turn
    from mio_agent.engine import ConversationEngine, ReplyOptions, ReplyResult
    from mio_agent.parser import ParserEvent

__all__ = ["ConversationBackend", "ReplyEvents"]


@runtime_checkable
class ReplyEvents(Protocol):
    """One streaming reply: parser events as the model produces them; cancellable between two steps."""

    result: ReplyResult | None

    def __aiter__(self) -> AsyncIterator[ParserEvent]: ...

    async def cancel(self) -> ReplyResult:
        """Stop decoding; the history keeps exactly the tokens whose events were handed out."""
        ...

    async def wait(self) -> ReplyResult:
        """Consume the rest of the reply and return its result."""
        ...


@runtime_checkable
class ConversationBackend(Protocol):
    """One conversation with MIO: its history by turn, its (local or remote) cache, streaming replies.

    The contract every implementation keeps (tests/test_engine*.py hold the local one to it):
    - the history is a system segment and whole turns; `ids` are MIO's exact prompt ids;
    - a new turn costs only its own tokens (the cache is kept across turns, or the prefix is
      cached by the server), and `stage_turn` + `prefill` work on a turn while it is spoken;
    - `reply` streams parser events under MIO's constrained decoding (decodable speech blocks,
      32-code images) and is cancellable between any two decoding steps; after a cancel, the
      history holds exactly what was delivered; `replace_last_reply` rewrites it to what was heard;
    - past `max_context`, whole old turns are dropped, never the generation prompt;
    - one reply at a time (EngineBusyError otherwise); `close` releases everything.
    """

    mode: Mode
    max_context: int
    max_new_tokens: int
    seed: int | None

    @property
    def ids(self) -> tuple[int, ...]: ...

    @property
    def turns(self) -> tuple[Turn, ...]: ...

    @property
    def staged(self) -> Turn | None: ...

    @property
    def busy(self) -> bool: ...

    def add_turn(self, turn: Turn) -> None: ...

    def stage_turn(self, turn: Turn | None) -> None: ...

    async def prefill(self) -> tuple[int, float]: ...

    def replace_last_reply(self, parts: Sequence[Part]) -> None: ...

    def reply(self, turn: Turn | None = None, options: ReplyOptions | None = None) -> ReplyEvents: ...

    async def reply_complete(
        self, turn: Turn | None = None, options: ReplyOptions | None = None
    ) -> ReplyResult: ...

    def close(self) -> None: ...


if TYPE_CHECKING:

    def _the_local_engine_implements_the_seam(engine: ConversationEngine) -> ConversationBackend:
        # mypy checks here that the local engine implements the interface remote engines implement
        return engine
