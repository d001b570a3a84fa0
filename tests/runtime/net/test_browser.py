"""The browser voice client in real headless Chromium (Debian's), driven by Playwright: a WAV is spoken
into the page's fake microphone, the reply plays and shows, and an interrupt stops the sound."""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import playwright.async_api as playwright_api
import pytest

from mio_agent.config import ServerConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # scripts/setup.sh --test installs it: a missing browser is a broken setup
    raise RuntimeError("chromium is not installed: apt-get install chromium (scripts/setup.sh --test does)")


def speech_wav(espeak: Callable[..., Path], folder: Path) -> Path:
    """espeak-ng speech with 3 s of silence after it, 48 kHz mono (Chromium loops the file)."""
    from mio_agent.codecs.speech import load_audio, resample

    audio, rate = load_audio(espeak("hello there, can you hear me today"))
    mono = resample(audio if audio.ndim == 1 else audio[0], rate, 48000)
    pcm = (np.clip(np.concatenate([mono, np.zeros(48000 * 3, np.float32)]), -1, 1) * 32767).astype("<i2")
    out = folder / "mic.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(pcm.tobytes())
    return out


@pytest.fixture
async def server() -> AsyncIterator[MioServer]:
    shared = SharedResources.load(
        load_config(None, overrides={"engine.max_new_tokens": 900, "router.transcribe": "never"})
    )
    long = ReplyOptions(min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False)
    srv = MioServer(SessionHub(shared), ServerConfig(port=0), reply_options=long)
    await srv.start()
    yield srv
    await srv.close()


async def poll(page: Any, expr: str, timeout: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(expr)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            stats = await page.evaluate("JSON.stringify(window.mioStats)")
            raise AssertionError(f"{expr} never became true; stats: {stats}")
        await asyncio.sleep(0.2)


async def test_speaking_into_the_page_plays_a_reply_and_interrupt_stops_it(
    server: MioServer, espeak: Callable[..., Path], tmp_path: Path
) -> None:
    wav = speech_wav(espeak, tmp_path)
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
            ],
        )
        try:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{server.port}/")
            await poll(page, "window.mioStats && window.mioStats.connected >= 1")
            await page.click("#mic")
            await poll(page, "window.mioStats.sentFrames > 50")
            # the server heard the speech, answered, and the page scheduled the reply's audio
            await poll(page, "window.mioStats.audioChunks > 3")
            text = await page.inner_text("#log")
            assert "you: (spoke" in text
            # an interrupt stops every scheduled source at once and says so
            before = await page.evaluate("window.mioStats.clears")
            await page.click("#stop")
            await poll(page, f"window.mioStats.clears > {before}")
            assert "playback cleared" in await page.inner_text("#log")
            # typed text works too
            await page.fill("#text", "and now in text")
            await page.press("#text", "Enter")
            await poll(page, "document.getElementById('log').innerText.includes('you: and now in text')")
        finally:
            await browser.close()
