"""`mio-agent bench voice`: latency split, barge-in to silence, self-interruptions and memory over many turns."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mio_agent.config import load_config
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioIn, AudioOut, Metrics, TextIn
from mio_agent.runtime.app import AppOptions, VoiceApp
from mio_agent.runtime.audio.loopback import EchoRoom
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session

__all__ = ["bench_voice", "bench_voice_cli", "shaped_resources"]

USER_LINES = (
    "hello there, could you tell me what the weather will be like later today",
    "wait, stop, I want to ask you something else instead",
    "please tell me a short story about a small red fox in the forest",
)
REPLY_LINE = (
    "Today will be mostly sunny with a light breeze from the west, and in the evening a few clouds "
    "will come in from the sea, so take a jacket if you go out late."
)
LONG_REPLY = ReplyOptions(min_speech_codes=150, max_speech_codes=220, allow_text=False, allow_image=False)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _speech(text: str, folder: Path) -> np.ndarray:
    """16 kHz float speech of `text` from espeak-ng, or a synthetic voiced signal without it."""
    from mio_agent.codecs.speech import load_audio, resample, synthetic_speech

    exe = shutil.which("espeak-ng")
    if exe is None:
        return synthetic_speech(3.0, 16000, seed=len(text))
    out = folder / f"{abs(hash(text))}.wav"
    subprocess.run([exe, "-w", str(out), text], check=True, capture_output=True, timeout=60)
    audio, rate = load_audio(out)
    return resample(audio if audio.ndim == 1 else audio[0], rate, 16000).astype(np.float32)


def _pcm(audio: np.ndarray) -> bytes:
    pcm: bytes = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


async def _latency(shared: SharedResources, voice: list[np.ndarray], turns: int) -> dict[str, Any]:
    """Spoken turns streamed at 4× real time; the split of end of speech → first audio out."""
    stages: dict[str, list[float]] = {}
    async with Session(shared) as session:
        sub = session.bus.subscribe("bench", maxsize=1 << 16, filter=lambda e: e.type == "metrics")
        for i in range(turns):
            data = _pcm(voice[i % len(voice)]) + bytes(16000 * 2)
            for k in range(0, len(data), 640):
                await session.send(
                    AudioIn(session=session.id, turn=0, pcm=data[k : k + 640], sample_rate=16000)
                )
                await asyncio.sleep(0.005)
            await session.idle(120)
        while sub.pending:
            ev = await sub.get()
            assert isinstance(ev, Metrics)
            if ev.stage == "first_audio":
                for key in ("encode_s", "transcribe_s", "engine_s", "decode_s", "overhead_s"):
                    stages.setdefault(key, []).append(float(ev.extra[key]))
                stages.setdefault("first_audio_s", []).append(ev.seconds)
            elif ev.stage == "vad":
                stages.setdefault("vad_s", []).append(ev.seconds)
    out: dict[str, Any] = {"latency_turns": len(stages.get("first_audio_s", []))}
    for key, values in stages.items():
        out[f"{key[:-2]}_p50_ms"] = round(_pct(values, 50) * 1000, 2)
        out[f"{key[:-2]}_p95_ms"] = round(_pct(values, 95) * 1000, 2)
    return out


async def _barge_in(shared: SharedResources, voice: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """A real-time room: the user speaks over each long reply; how soon after the deciding audio
    the speaker is silent (the clear, plus what the device still held: one 20 ms room frame)."""
    silence = np.zeros(16000 * 2, np.float32)
    parts: list[np.ndarray] = []
    for i in range(rounds + 1):
        parts += [voice[i % len(voice)], silence[: 16000 * 3 // 2]]
    room = EchoRoom(np.concatenate(parts), fast=False, pad_s=4.0, gain_db=-12.0)
    app = VoiceApp(
        shared,
        room.mic,
        room.speaker,
        AppOptions(status=False, echo_cancel=True, reply_options=LONG_REPLY),
    )
    task = asyncio.create_task(app.run())
    while app.session is None:
        await asyncio.sleep(0.01)
    sub = app.session.bus.subscribe(
        "bench", maxsize=1 << 16, filter=lambda e: e.type in ("metrics", "playback.clear", "turn.ended")
    )
    await task
    delays: list[float] = []
    clears = interrupted = 0
    while sub.pending:
        ev = await sub.get()
        if isinstance(ev, Metrics) and ev.stage == "barge_in":
            delays.append(ev.seconds + 0.020)
        clears += ev.type == "playback.clear"
        interrupted += getattr(ev, "reason", "") == "interrupted"
    return {
        "barge_ins": len(delays),
        "barge_in_to_silence_p50_ms": round(_pct(delays, 50) * 1000, 2),
        "barge_in_to_silence_p95_ms": round(_pct(delays, 95) * 1000, 2),
        "barge_in_turns_interrupted": interrupted,
    }


async def _self_interruptions(shared: SharedResources, reply: np.ndarray, replies: int) -> dict[str, Any]:
    """Spoken replies played into an echo room (-6 dB, 60 ms) with nobody talking: times the
    assistant heard itself as a user."""
    heard = 0
    for n in range(replies):
        room = EchoRoom(None, fast=True, pad_s=reply.size / 16000 + 3.0, gain_db=-6.0, seed=n)
        app = VoiceApp(shared, room.mic, room.speaker, AppOptions(status=False, echo_cancel=True, fast=True))
        task = asyncio.create_task(app.run())
        while app.session is None:
            await asyncio.sleep(0.01)
        session = app.session
        sub = session.bus.subscribe("bench", maxsize=64, filter=lambda e: e.type == "user.speech.started")
        pcm = _pcm(reply * 0.9)
        step = 6400
        for seq, k in enumerate(range(0, len(pcm), step)):
            session.bus.publish(
                AudioOut(session=session.id, turn=1, pcm=pcm[k : k + step], sample_rate=16000, seq=seq)
            )
        await task
        heard += sub.pending
    return {"echo_replies": replies, "self_interruptions": heard}


async def _memory(shared: SharedResources, turns: int) -> dict[str, Any]:
    """RSS after 10 % of the turns and after all of them: flat means bounded buffers and context."""
    import psutil

    proc = psutil.Process()
    marks: dict[int, float] = {}
    async with Session(shared) as session:
        sub = session.bus.subscribe("drain", maxsize=16, filter=lambda e: False)
        for i in range(1, turns + 1):
            session.submit(TextIn(session=session.id, turn=0, text=f"turn number {i}, tell me more"))
            await session.idle(60)
            if i in (turns // 10, turns):
                gc.collect()
                marks[i] = proc.memory_info().rss / 2**20
        context = len(session.engine.ids)
        sub.close()
    first, last = marks[turns // 10], marks[turns]
    return {
        "memory_turns": turns,
        "rss_mb_at_10pct": round(first, 1),
        "rss_mb_at_end": round(last, 1),
        "rss_growth_mb": round(last - first, 1),
        "context_tokens_at_end": context,
        "max_context": shared.config.engine.max_context,
    }


def shaped_resources(shape: str, device: str, extra: dict[str, Any] | None = None) -> SharedResources:
    """The embedded model (default), or a model of another shape built on `device` with the
    embedded codecs and plugins around it (the speech codec on the same device); `extra` config
    overrides are read before the model's fast path is made (e.g. engine.batch_sessions)."""
    overrides: dict[str, Any] = {
        "engine.max_new_tokens": 900, "engine.max_context": 2048, "engine.seed": 0, **(extra or {})
    }  # fmt: skip
    if shape == "embedded" and device == "cpu":
        return SharedResources.load(load_config(None, overrides=overrides))
    from mio_agent.codecs.folders import speech_tokenizer_dir
    from mio_agent.codecs.speech import SpeechCodec
    from mio_agent.model.fast_path import prepare_for_config
    from mio_agent.model.shaped import shaped_model
    from mio_agent.plugin import PluginManager

    config = load_config(None, overrides={**overrides, "codecs.device": device})
    lm = shaped_model(shape, device=device)
    # compile and capture at load, as `run` does
    prepare_for_config(lm, config.engine)
    speech = SpeechCodec.from_pretrained(speech_tokenizer_dir(config), device=device)
    plugins = PluginManager.from_config(config)
    return SharedResources(config=config, lm=lm, speech=speech, plugins=plugins, embedded=True)


async def bench_voice(*, quick: bool = False, shape: str = "embedded", device: str = "cpu") -> dict[str, Any]:
    """All four measurements on the embedded model; one flat dict of figures. With another shape
    or device (e.g. mio-7b on cuda) only the latency split and barge-in are measured: the memory
    and echo figures do not depend on the model's size."""
    shared = shaped_resources(shape, device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        voice = [_speech(t, folder) for t in USER_LINES]
        reply = _speech(REPLY_LINE, folder)
    t0 = time.perf_counter()
    figures: dict[str, Any] = {
        "bench": "voice",
        "model": shape,
        "device": device,
        "cpu_threads": os.cpu_count() or 0,
    }
    figures |= await _latency(shared, voice, 6 if quick else 20)
    figures |= await _barge_in(shared, voice, 2 if quick else 5)
    if shape == "embedded" and device == "cpu":
        figures |= await _self_interruptions(shared, reply, 2 if quick else 10)
        figures |= await _memory(shared, 40 if quick else 200)
    figures["goal_overhead_p95_ms"] = 10.0
    figures["goal_barge_in_p95_ms"] = 100.0
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    return figures


def bench_voice_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of `mio-agent bench voice [--shape S] [--device D]`."""
    return asyncio.run(
        bench_voice(
            quick=bool(getattr(args, "quick", False)),
            shape=getattr(args, "shape", None) or "embedded",
            device=str(getattr(args, "device", "cpu")),
        )
    )
