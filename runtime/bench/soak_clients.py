"""The soak's simulated clients: each acts on one session, resumed across its own dropped connections."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from mio_agent.protocol import FrameKind, unpack_frame
from mio_agent.runtime.bench.soak_tally import Tallies
from mio_agent.runtime.net.client import MioClient

__all__ = ["KINDS", "Soaker", "speech_pcm"]

KINDS = ("spoken", "typed", "image", "invoke", "invoke_raises", "invoke_hangs", "barge_in", "resume")
"""What a client does, one action at a time: every kind once per round, each round in a seeded order."""

ACTION_TIMEOUT_S = 180.0
"""How long one action may wait for its turn to end before it counts as timed out (a loaded machine)."""

SPOKEN_LINES = (
    "could you tell me what the weather will be like later today",
    "hello, I would like to know when the next train leaves",
    "please remind me what we were talking about a moment ago",
)
TYPED_LINES = (
    "hello there, how are you today",
    "what time do the shops close on sundays",
    "tell me something nice about the sea",
    "can you help me plan a quiet weekend",
    "which fruit has the most vitamin c",
)
IMAGE_LINE = "tell me about this one"
LONG_LINE = "please talk for a long while about mountains and rivers"
INVOKE_LINE = "write two lines about rain"


def speech_pcm(folder: Path) -> list[bytes]:
    """Each of `SPOKEN_LINES` as 16 kHz PCM, spoken (espeak-ng, else synthetic), then a second of silence."""
    from mio_agent.runtime.bench.voice import _pcm, _speech

    silence = bytes(16000 * 2)  # a second: the turn ends after the VAD's end-of-turn silence
    return [_pcm(_speech(line, folder)) + silence for line in SPOKEN_LINES]


class Soaker:
    """One client: a session it keeps across its own dropped connections, acting until time is up."""

    def __init__(
        self,
        index: int,
        url: str,
        *,
        seed: int,
        mode: str,
        speech: list[bytes],
        server_seq: Callable[[str], int],
        tallies: Tallies,
    ) -> None:
        self.index = index
        self.rng = random.Random(f"soak:{seed}:{index}")
        self.client = MioClient(url, mode=mode)
        self.speech = speech
        self.server_seq = server_seq
        self.t = tallies
        self.seen = bytearray()
        """How many times each seq arrived (index = seq), across every connection of the session."""
        self.last = 0
        """The newest seq processed (what a resume asks after)."""
        self.user_turns: list[int] = []
        self.ended: dict[int, str] = {}
        self.output: set[int] = set()
        self.turn_errors: dict[int, list[str]] = {}
        self.audio_bytes: Counter[int] = Counter()
        self.speaking = 0
        self.speech_ended = 0
        self.levels = 0
        self.pongs: set[str] = set()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._conn_last = 0

    # -- connection ---------------------------------------------------------------------------
    async def connect(self, *, resume: bool = False) -> None:
        if resume:
            self.client.last_seq = self.last
            welcome = await self.client.connect(resume=self.client.session)
            if not welcome.resumed:
                raise AssertionError("a resume was answered as a new session")
            self.t.resumes += 1
            self.t.missed += welcome.missed
        else:
            welcome = await self.client.connect()
            self.last = self.client.last_seq
        self._conn_last = int(welcome.raw["seq"]) if not resume else self.last
        self._reader = asyncio.create_task(self._read(), name=f"soak-reader-{self.index}")

    def _note_seq(self, seq: int) -> None:
        if seq >= len(self.seen):
            self.seen.extend(bytes(seq + 1024 - len(self.seen)))
        self.seen[seq] = min(255, self.seen[seq] + 1)
        if seq != self._conn_last + 1:
            self.t.out_of_order += 1
        self._conn_last = seq
        self.last = max(self.last, seq)
        self.t.received += 1

    async def _read(self) -> None:
        ws = self.client.ws
        assert ws is not None
        try:
            while True:
                raw = await ws.recv()
                self._handle(raw)
                self._changed.set()
        except Exception as exc:  # ConnectionClosed, or the transport we aborted
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            if not self._closing:
                self.t.closes[str(code or type(exc).__name__)] += 1
        finally:
            self._changed.set()

    def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            frame = unpack_frame(raw)
            self._note_seq(frame.seq)
            if frame.kind == FrameKind.AUDIO_OUT:
                self.output.add(frame.stream)
                self.audio_bytes[frame.stream] += len(frame.payload)
                self.t.audio_bytes += len(frame.payload)
            return
        msg = json.loads(raw)
        self._note_seq(int(msg["seq"]))
        if msg["type"] == "error":
            self.t.errors[msg["code"]] += 1
            if msg["code"] == "replay.gap":
                self.t.gap_lost += int(msg.get("lost", 0))
        elif msg["type"] == "pong":
            self.pongs.add(str(msg.get("nonce")))
        elif msg["type"] == "event":
            ev = msg["event"]
            kind, turn = ev["type"], int(ev.get("turn", 0))
            if kind == "user.turn":
                self.user_turns.append(turn)
            elif kind == "turn.ended":
                self.ended[turn] = str(ev.get("reason"))
            elif kind in ("text.delta", "speech.codes"):
                self.output.add(turn)
                self.t.text_deltas += kind == "text.delta"
            elif kind == "user.speech.started":
                self.speaking += 1
            elif kind == "user.speech.ended":
                self.speaking -= 1
                self.speech_ended += 1
            elif kind == "input.level":
                self.levels += 1
            elif kind == "error":
                self.t.errors[ev["code"]] += 1
                self.turn_errors.setdefault(turn, []).append(ev["code"])

    async def _until(self, cond: Callable[[], bool], timeout: float = ACTION_TIMEOUT_S) -> None:
        """Wait for `cond`; a connection that dropped on its own is resumed meanwhile."""
        async with asyncio.timeout(timeout):
            while not cond():
                if self._reader is not None and self._reader.done():
                    await self._resume_after(0.1)
                    continue
                self._changed.clear()
                await self._changed.wait()

    async def _resume_after(self, pause: float) -> None:
        if self._reader is not None:
            await asyncio.wait({self._reader})
        self.client.ws = None
        await asyncio.sleep(pause)
        await self.connect(resume=True)

    async def _drop(self) -> None:
        """Close the TCP socket without a close frame (a cable pulled), then resume after a pause."""
        ws = self.client.ws
        assert ws is not None
        self._closing = True
        ws.transport.abort()
        if self._reader is not None:
            await asyncio.wait({self._reader})
        self._closing = False
        await self._resume_after(self.rng.uniform(0.05, 0.5))

    # -- actions ------------------------------------------------------------------------------
    async def _turn(self, send: Callable[[], Any]) -> int:
        """Send, then the number of the user turn it made."""
        k = len(self.user_turns)
        await send()
        await self._until(lambda: len(self.user_turns) > k)
        return self.user_turns[k]

    async def _played(self, n: int) -> None:
        """Say the turn's audio was heard to the end (as a client that played it would)."""
        ms = self.audio_bytes.pop(n, 0) / 32.0
        if ms and self.client.ws is not None:
            await self.client.playback(n, ms)

    async def _ended(self, n: int) -> str:
        await self._until(lambda: n in self.ended)
        await self._played(n)
        return self.ended[n]

    async def act(self, kind: str) -> None:
        self.t.attempted[kind] += 1
        try:
            what, ok = await getattr(self, f"_{kind}")()
        except TimeoutError:
            what, ok = "timed out", False
        except (ConnectionClosed, OSError) as exc:  # a send on a connection that dropped by itself
            what, ok = f"connection lost: {type(exc).__name__}", False
            await self._resume_after(0.1)
        self.t.outcome(kind, what, ok)

    async def _typed(self) -> tuple[str, bool]:
        n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
        reason = await self._ended(n)
        return reason, reason in ("completed", "length")

    async def _image(self) -> tuple[str, bool]:
        from PIL import Image

        pixels = np.random.default_rng(self.rng.getrandbits(32)).integers(0, 256, (48, 64, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")

        async def send() -> None:
            await self.client.send_image(buf.getvalue(), "soak.png")
            await self.client.send_text(IMAGE_LINE)

        reason = await self._ended(await self._turn(send))
        return reason, reason in ("completed", "length")

    async def _invoke_as(self, name: str, text: str) -> tuple[str, list[str]]:
        n = await self._turn(lambda: self.client.invoke(name, text))
        return await self._ended(n), self.turn_errors.get(n, [])

    async def _invoke(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("text_generation", INVOKE_LINE)
        shown = f"{reason} ({', '.join(errors)})" if errors else reason
        return shown, reason in ("completed", "length") and not errors

    async def _invoke_raises(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("soak_raises", "go")
        return reason, reason == "error" and errors == ["capability.error"]

    async def _invoke_hangs(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("soak_hangs", "go")
        return reason, reason == "error" and errors == ["capability.timeout"]

    async def _spoken(self) -> tuple[str, bool]:
        pcm = self.rng.choice(self.speech)
        k, ended0, levels0 = len(self.user_turns), self.speech_ended, self.levels
        # the session sends one input.level per 5 frames of 20 ms it has processed
        levels = len(pcm) // 640 // 5
        sender = asyncio.create_task(self.client.send_audio(pcm, 16000, realtime=4.0))
        sender.add_done_callback(lambda _: self._changed.set())
        try:
            # all of it sent and processed, and the speech in it over
            await self._until(
                lambda: (
                    sender.done()
                    and self.levels - levels0 >= levels
                    and self.speech_ended > ended0
                    and self.speaking == 0
                )
            )
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        try:
            await self._until(lambda: len(self.user_turns) > k, 30)
        except TimeoutError:
            return "no turn was heard", False
        reasons = [await self._ended(n) for n in list(self.user_turns[k:])]
        shown = reasons[-1] if len(reasons) == 1 else f"{reasons[-1]} ({len(reasons)} turns)"
        return shown, reasons[-1] in ("completed", "length")

    async def _barge_in(self) -> tuple[str, bool]:
        n = await self._turn(lambda: self.client.send_text(LONG_LINE))
        await self._until(lambda: n in self.output or n in self.ended)
        if n in self.ended:
            reason = await self._ended(n)
            return f"ended before the interrupt ({reason})", True
        await self.client.interrupt()
        reason = await self._ended(n)
        return reason, reason in ("interrupted", "completed", "length")

    async def _resume(self) -> tuple[str, bool]:
        if self.rng.random() < 0.5:
            await self._drop()  # while idle
            n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
        else:
            n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
            await self._until(lambda: n in self.output or n in self.ended)
            await self._drop()  # mid-reply
        reason = await self._ended(n)
        return reason, reason in ("completed", "length")

    # -- the whole life ---------------------------------------------------------------------------
    async def run(self, deadline: float) -> None:
        await self.connect()
        rounds = 0
        try:
            while rounds == 0 or time.monotonic() < deadline:
                order = list(KINDS)
                self.rng.shuffle(order)
                for kind in order:
                    if rounds > 0 and time.monotonic() >= deadline:
                        break
                    await self.act(kind)
                rounds += 1
            await self._leave()
        finally:
            self._closing = True
            if self.client.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.close(), 10)
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)

    async def _leave(self) -> None:
        """Read everything the server numbered for this session, then close cleanly, and count what
        never arrived or arrived twice."""
        nonce = f"bye-{self.index}"
        await self.client.ping(nonce)
        await self._until(lambda: nonce in self.pongs, 60)
        sid = self.client.session
        await self._until(lambda: self.last >= self.server_seq(sid), 60)
        newest = self.server_seq(sid)
        self._closing = True
        await self.client.close()
        counts = self.seen[1 : newest + 1].ljust(newest, b"\0")
        self.t.lost += counts.count(0)
        self.t.duplicated += sum(c - 1 for c in counts if c > 1)
        self.t.leave_seq[sid] = newest
