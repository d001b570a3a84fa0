"""Starting the TUI's backend: the voice runtime of `mio-agent run` (or a text-only session), or a server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mio_agent.config import Config
from mio_agent.tui.backend import Backend, LocalBackend, RemoteBackend

if TYPE_CHECKING:
    from mio_agent.engine import ReplyOptions
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["AudioChoice", "LocalLauncher", "open_local", "remote_backend_factory"]


@dataclass(slots=True)
class AudioChoice:
    """The sound (and camera) around a local session: devices, files, or none (`enabled` False)."""

    enabled: bool = True
    input_device: str | None = None
    output_device: str | None = None
    mic_file: Path | None = None
    speaker_file: Path | None = None
    camera: str | None = None
    echo_cancel: bool = True


def _audio_devices(audio: AudioChoice, cfg: Config) -> tuple[Any, Any]:
    from mio_agent.runtime.audio.files import FileMicSource, FileSpeakerSink

    if audio.mic_file is not None:
        mic: Any = FileMicSource(audio.mic_file, pad_s=1.0)
    else:
        from mio_agent.runtime.audio.pyaudio_io import MicrophoneSource

        mic = MicrophoneSource(audio.input_device or cfg.audio.input_device)
    if audio.speaker_file is not None:
        speaker: Any = FileSpeakerSink(audio.speaker_file)
    else:
        from mio_agent.runtime.audio.pyaudio_io import SpeakerSink

        speaker = SpeakerSink(audio.output_device or cfg.audio.output_device)
    return mic, speaker


async def open_local(
    shared: SharedResources,
    *,
    log_root: Path | None,
    resume: str | None = None,
    audio: AudioChoice | None = None,
    reply_options: ReplyOptions | None = None,
) -> Backend:
    """A local session: the voice app of `mio-agent run` (microphone, speaker, camera) when `audio` is
    enabled and its devices open, else a session for typed turns and files, saying why in `notice`."""
    from mio_agent.runtime.voice.hub import SessionHub

    where = f"{shared.config.model.path or 'embedded tiny model (replies are noise)'} on {shared.lm.device}"
    notice = "" if audio is not None and audio.enabled else "no audio: type your turns"
    if audio is not None and audio.enabled:
        from mio_agent.runtime.app import AppOptions, VoiceApp

        try:
            mic, speaker = _audio_devices(audio, shared.config)
        except Exception as exc:  # no PortAudio, no such device: the TUI still works by typing
            notice = f"no audio ({exc}): type your turns"
        else:
            options = AppOptions(
                session_dir=log_root,
                camera=audio.camera,
                status=False,
                echo_cancel=audio.echo_cancel,
                session_id=resume,
                reply_options=reply_options,
            )
            voice = VoiceApp(shared, mic, speaker, options)
            task = asyncio.create_task(voice.run(), name="tui-voice-app")
            while voice.session is None and not task.done():
                await asyncio.sleep(0.01)
            if voice.session is not None:

                async def stop() -> None:
                    voice.stop("the TUI closed")
                    with contextlib.suppress(Exception):
                        await task

                return LocalBackend(voice.session, where, microphone=True, on_close=stop)
            notice = f"no audio ({task.exception()}): type your turns"
    hub = SessionHub(shared, log_root=log_root)
    session = await hub.open(resume, reply_options=reply_options)
    return LocalBackend(session, where, notice=notice, on_close=hub.aclose)


class LocalLauncher:
    """Makes local backends on one set of resources: the model loads once (in a thread: the UI shows
    meanwhile), however often the app is opened again on another session."""

    def __init__(self, cfg: Config, root: Path | None, audio: AudioChoice) -> None:
        self.cfg = cfg
        self.root = root
        self.audio = audio
        self.shared: SharedResources | None = None

    def factory(self, resume: str | None = None) -> Callable[[], Awaitable[Backend]]:
        """A backend maker for a new session, or for continuing the logged session `resume`."""

        async def make() -> Backend:
            from mio_agent.runtime.voice.resources import SharedResources

            if self.shared is None:
                self.shared = await asyncio.to_thread(SharedResources.load, self.cfg)
            return await open_local(self.shared, log_root=self.root, resume=resume, audio=self.audio)

        return make


def remote_backend_factory(url: str, token: str | None) -> Callable[[], Awaitable[Backend]]:
    async def make() -> Backend:
        from mio_agent.runtime.net.client import MioClient

        client = MioClient(url, token=token)
        await client.connect()
        return RemoteBackend(client)

    return make
