"""`mio-agent serve` (the WebSocket server) and `mio-agent client` (a terminal client of it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from mio_agent.config import load_config
from mio_agent.exceptions import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add `serve` and `client` to the `mio-agent` command."""
    s: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve sessions over WebSocket (and the browser voice page over HTTP)",
        description="Serve the assistant over WebSocket (protocol: docs/protocol.md) and the browser page at "
        "http://HOST:PORT/. Binds 127.0.0.1 unless told otherwise; other addresses need a token.",
    )
    s.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded model)")
    s.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: server.port, 8765; 0: any free port)")
    s.add_argument("--token", help="token clients must send (default: server.token)")
    s.add_argument("--session-dir", metavar="DIR", help="where session logs go (default: session.dir)")
    s.add_argument("--no-log", action="store_true", help="keep no session logs")
    s.set_defaults(func=_serve)

    c: argparse.ArgumentParser = sub.add_parser(
        "client",
        help="talk to a running `mio-agent serve` from the terminal (text or a WAV file)",
    )
    c.add_argument(
        "--url", default="ws://127.0.0.1:8765/ws", help="server URL (default ws://127.0.0.1:8765/ws)"
    )
    c.add_argument("--token", help="the server's token")
    c.add_argument("--text", help="send this text as a turn")
    c.add_argument("--speech-file", metavar="F", help="send this WAV as spoken input")
    c.add_argument("--out", metavar="DIR", help="write the reply audio (reply-N.wav) and images here")
    c.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the reply")
    c.set_defaults(func=_client)


def _serve(args: argparse.Namespace) -> int:
    from mio_agent.runtime.hub import SessionHub
    from mio_agent.runtime.resources import Resources
    from mio_agent.runtime.server import MioServer

    overrides: dict[str, Any] = {}
    for key in ("host", "port", "token"):
        if getattr(args, key) is not None:
            overrides[f"server.{key}"] = getattr(args, key)
    cfg = load_config(args.config, overrides=overrides)
    log_root = (
        None if args.no_log else Path(args.session_dir) if args.session_dir else cfg.session.resolved_dir()
    )

    async def main() -> int:
        res = await asyncio.to_thread(Resources.load, cfg, quiet=False)
        hub = SessionHub(res, log_root=log_root)
        server = MioServer(hub, cfg.server)
        port = await server.start()
        await res.plugins.startup(server)
        bridge = None
        if cfg.mqtt.enabled:
            from mio_agent.runtime.mqtt import MqttBridge

            bridge = MqttBridge(cfg.mqtt, hub)
            await bridge.start()
        print(
            f"mio-agent serve: ws://{cfg.server.host}:{port}/ws  (browser page: http://{cfg.server.host}:{port}/)",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await res.plugins.shutdown(server)
        if bridge is not None:
            await bridge.aclose()
        await server.close()
        await hub.aclose()
        return 0

    return asyncio.run(main())


def _client(args: argparse.Namespace) -> int:
    from mio_agent.events import AudioOut, ImageOut, TextDelta, TurnEnded
    from mio_agent.runtime.client import MioClient, ServerError

    if args.text is None and args.speech_file is None:
        raise ConfigError("give --text T or --speech-file F.wav")
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    async def main() -> int:
        import numpy as np

        client = MioClient(args.url, token=args.token)
        welcome = await client.connect()
        print(f"session {welcome.session}", file=sys.stderr)
        if args.speech_file:
            from mio_agent.codecs.speech import load_audio

            audio, rate = load_audio(args.speech_file)
            mono = audio if audio.ndim == 1 else audio.mean(axis=0)
            pcm = (np.clip(mono, -1, 1) * 32767).astype("<i2").tobytes()
            await client.send_audio(pcm + bytes(rate * 2), rate)
        else:
            await client.send_text(args.text)
        audio_parts: dict[int, list[bytes]] = {}
        status = 0
        try:
            while True:
                item = await client.next(timeout=args.timeout)
                if isinstance(item, TextDelta):
                    sys.stdout.write(item.text)
                    sys.stdout.flush()
                elif isinstance(item, AudioOut):
                    audio_parts.setdefault(item.turn, []).append(item.pcm)
                elif isinstance(item, ImageOut) and item.png is not None and out is not None:
                    (out / f"image-{item.turn}.png").write_bytes(item.png)
                elif isinstance(item, ServerError):
                    print(f"\nserver error {item.code}: {item.message}", file=sys.stderr)
                    status = 1
                elif isinstance(item, TurnEnded):
                    print(f"\n[turn {item.turn} {item.reason}]", file=sys.stderr)
                    break
        finally:
            await client.close()
        if out is not None:
            from mio_agent.codecs.speech import write_wav

            for turn, parts in audio_parts.items():
                samples = np.frombuffer(b"".join(parts), "<i2").astype(np.float32) / 32768
                write_wav(out / f"reply-{turn}.wav", samples, 16000)
                print(f"wrote {out / f'reply-{turn}.wav'}", file=sys.stderr)
        return status

    try:
        return asyncio.run(main())
    except OSError as exc:
        raise ConfigError(
            f"cannot reach {args.url}: {exc.strerror or exc}; is `mio-agent serve` running?"
        ) from None
