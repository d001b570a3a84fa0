"""Reply speech codes in, `audio.out` chunks out: streaming decoding off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np

from mio_agent.codecs.speech import SpeechCodec, StreamingSpeechDecoder
from mio_agent.events import AudioOut

__all__ = ["SpeechOut"]


def _pcm16(chunk: np.ndarray) -> bytes:
    return np.clip(np.round(chunk * 32768.0), -32768, 32767).astype("<i2").tobytes()


class SpeechOut:
    """Decodes one agent turn's speech into AudioOut events as the codes arrive.

    Model replies stream content codes: each is decoded as soon as the decoder's look-ahead
    allows (content-only audio: MIO writes a block's timbre codes after all its content codes,
    so waiting for them would mean waiting for the whole reply). Capabilities hand over whole
    blocks (content then three timbre layers), which are decoded with their timbre.

    `emit` receives each AudioOut; it returns False once the turn was interrupted, after which
    nothing more is decoded or sent. `decode_s` is the time spent decoding (for metrics).
    """

    def __init__(
        self,
        codec: SpeechCodec,
        executor: Executor,
        *,
        session: str,
        turn: int,
        emit: Callable[[AudioOut], bool],
    ) -> None:
        self._codec = codec
        self._executor = executor
        self._session = session
        self._turn = turn
        self._emit = emit
        self._decoder: StreamingSpeechDecoder | None = None
        self._layers: list[tuple[int, ...]] = []
        self.seq = 0
        self.samples = 0
        self.decode_s = 0.0
        self.first_audio_at: float | None = None
        self.stopped = False

    @property
    def produced_ms(self) -> float:
        return self.samples * 1000.0 / self._codec.sample_rate

    async def _run(self, fn: Callable[[], list[np.ndarray]]) -> None:
        if self.stopped:
            return
        t0 = time.perf_counter()
        chunks = await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        self.decode_s += time.perf_counter() - t0
        for chunk in chunks:
            if chunk.size == 0 or self.stopped:
                continue
            ev = AudioOut(
                session=self._session,
                turn=self._turn,
                pcm=_pcm16(chunk),
                sample_rate=self._codec.sample_rate,
                seq=self.seq,
            )
            if not self._emit(ev):
                self.stopped = True
                return
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            self.seq += 1
            self.samples += chunk.size

    async def content(self, codes: Sequence[int]) -> None:
        """More content codes of the open speech block of a model reply."""
        if self._decoder is None:
            self._decoder = self._codec.stream_decoder(mode="content")
        decoder, todo = self._decoder, tuple(codes)
        await self._run(lambda: decoder.push_content(todo))

    async def end_block(self) -> None:
        """The open block ended (or the reply did): decode what the look-ahead held back."""
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            await self._run(decoder.finish)

    async def layer(self, layer: int, codes: Sequence[int]) -> None:
        """One whole layer of a capability's speech block (0 = content, then timbre 1..3)."""
        if layer == 0:
            await self.flush_layers()
        self._layers.append(tuple(codes))
        if len(self._layers) == 4:
            await self.flush_layers()

    async def flush_layers(self) -> None:
        """Decode the block collected by `layer` (content-only if its timbre never came)."""
        layers, self._layers = self._layers, []
        if not layers:
            return
        content, *rest = layers
        timbre = rest if len(rest) == 3 else None
        codec = self._codec
        await self._run(lambda: [codec.decode(content, timbre)])

    async def finish(self) -> None:
        await self.end_block()
        await self.flush_layers()
