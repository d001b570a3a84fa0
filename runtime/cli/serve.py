"""`mio-agent serve` (the WebSocket server) and `mio-agent client` (a terminal client of it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
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


def _listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """One line saying why the server cannot listen on host:port, and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port {port} on {host} is already in use (another `mio-agent serve`?); choose another with "
            "--port N (or --port 0 for any free port), or stop what holds it"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"no permission to listen on port {port} on {host}; choose a port above 1023 with --port N"
        )
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port")


def _check_port(host: str, port: int) -> None:
    """Fail at once, before the model loads, when the address cannot be bound (as the server will)."""
    if port == 0:
        return
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


def _serve(args: argparse.Namespace) -> int:
    from mio_agent.runtime.net.server import MioServer
    from mio_agent.runtime.voice.hub import SessionHub
    from mio_agent.runtime.voice.resources import SharedResources

    overrides: dict[str, Any] = {}
    for key in ("host", "port", "token"):
        if getattr(args, key) is not None:
            overrides[f"server.{key}"] = getattr(args, key)
    cfg = load_config(args.config, overrides=overrides)
    log_root = (
        None if args.no_log else Path(args.session_dir) if args.session_dir else cfg.session.resolved_dir()
    )
    _check_port(cfg.server.host, cfg.server.port)

    async def main() -> int:
        shared = await asyncio.to_thread(SharedResources.load, cfg, quiet=False)
        hub = SessionHub(shared, log_root=log_root)
        server = MioServer(hub, cfg.server)
        try:
            port = await server.start()
        except OSError as exc:  # taken meanwhile
            await hub.aclose()
            raise _listen_error(cfg.server.host, cfg.server.port, exc) from None
        await shared.plugins.startup(server)
        bridge = None
        if cfg.mqtt.enabled:
            from mio_agent.runtime.net.mqtt import MqttBridge

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
        await shared.plugins.shutdown(server)
        if bridge is not None:
            await bridge.aclose()
        await server.close()
        await hub.aclose()
        return 0

    return asyncio.run(main())


def _client_url(url: str) -> str:
    """The `--url`, checked: a ws:// or wss:// URL with a host (ConfigError naming it otherwise)."""
    from websockets.exceptions import InvalidURI
    from websockets.uri import parse_uri

    try:
        parse_uri(url)
    except InvalidURI:
        raise ConfigError(
            f"--url {url!r} is not a WebSocket URL; use ws://HOST:PORT/ws (e.g. ws://127.0.0.1:8765/ws)"
        ) from None
    return url


def _next_output(out: Path, prefix: str, suffix: str) -> Path:
    """`out/{prefix}N{suffix}`, N one past the highest already there, created empty (never overwriting:
    the name is taken with an exclusive create, so two clients writing into one folder get two names)."""
    import re

    pattern = re.compile(rf"{re.escape(prefix)}(\d+){re.escape(suffix)}")
    n = max((int(m[1]) for p in out.iterdir() if (m := pattern.fullmatch(p.name))), default=0)
    while True:
        n += 1
        path = out / f"{prefix}{n}{suffix}"
        try:
            path.open("xb").close()
        except FileExistsError:
            continue
        return path


def _client_fail(message: str) -> int:
    """One line on stderr, exit status 1: the server could not be used or reported an error."""
    print(f"mio-agent client: error: {message}", file=sys.stderr)
    return 1


def _client(args: argparse.Namespace) -> int:
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

    from mio_agent.events import AudioOut, ErrorEvent, ImageOut, TextDelta, TurnEnded, TurnStarted
    from mio_agent.exceptions import ProtocolError
    from mio_agent.runtime.net.client import MioClient, ServerError

    if args.text is None and args.speech_file is None:
        raise ConfigError("give --text T or --speech-file F.wav")
    if args.text is not None and args.speech_file is None and not args.text.strip():
        raise ConfigError('--text is empty: give the words to send, e.g. --text "hello"')
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    url = _client_url(args.url)
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot make the folder: {exc.strerror or exc}") from None
    pcm = b""
    rate = 0
    if args.speech_file:
        import numpy as np

        from mio_agent.codecs.speech import load_audio

        audio, rate = load_audio(args.speech_file)  # CodecError (one line, status 2) if unreadable
        mono = audio if audio.ndim == 1 else audio.mean(axis=0)
        pcm = (np.clip(mono, -1, 1) * 32767).astype("<i2").tobytes()

    async def main() -> int:
        import numpy as np

        client = MioClient(url, token=args.token)
        try:
            welcome = await client.connect()
        except ProtocolError as exc:
            hint = "; pass the server's token with --token" if exc.code == "auth.token" else ""
            return _client_fail(f"{url}: {exc} [{exc.code}]{hint}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            return _client_fail(
                f"{url} refused the WebSocket with HTTP {status} {exc.response.reason_phrase}; "
                "check the URL (the path is /ws)"
            )
        except TimeoutError:
            return _client_fail(f"{url} did not answer the WebSocket handshake in time")
        except OSError as exc:
            import os

            # the errno's text, not asyncio's "Connect call failed (...)"; a resolver error has its own
            why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
            return _client_fail(f"cannot connect to {url}: {why}; is `mio-agent serve` running?")
        except WebSocketException as exc:
            return _client_fail(f"{url}: the WebSocket handshake failed: {exc}")
        print(f"session {welcome.session}", file=sys.stderr)
        audio_parts: dict[int, list[bytes]] = {}
        status = 0
        sent: set[str] = set()
        started = False
        try:
            if args.speech_file:
                await client.send_audio(pcm + bytes(rate * 2), rate)
            else:
                sent.add(await client.send_text(args.text))
            while True:
                item = await client.next(timeout=args.timeout)
                if isinstance(item, TextDelta):
                    sys.stdout.write(item.text)
                    sys.stdout.flush()
                elif isinstance(item, TurnStarted):
                    started = True
                elif isinstance(item, AudioOut):
                    audio_parts.setdefault(item.turn, []).append(item.pcm)
                elif isinstance(item, ImageOut) and item.png is not None and out is not None:
                    path = _next_output(out, "image-", ".png")
                    path.write_bytes(item.png)
                    print(f"\nwrote {path}", file=sys.stderr)
                elif isinstance(item, ServerError | ErrorEvent):
                    print(f"\nserver error {item.code}: {item.message}", file=sys.stderr)
                    status = 1
                    if isinstance(item, ServerError) and (item.fatal or item.ref in sent):
                        break  # the server refused what was sent: no turn follows
                    if isinstance(item, ErrorEvent) and item.code.startswith("input.") and not started:
                        break  # the input could not be used: no turn follows
                elif isinstance(item, TurnEnded):
                    print(f"\n[turn {item.turn} {item.reason}]", file=sys.stderr)
                    if item.reason == "error" and status == 0:
                        print(f"server error: turn {item.turn} ended in an error", file=sys.stderr)
                        status = 1
                    break
        except TimeoutError:
            status = _client_fail(f"no end of the turn within {args.timeout:g} s (--timeout)")
        except ConnectionClosed as exc:
            close = exc.rcvd
            why = f"{close.reason or 'no reason'} (close code {close.code})" if close else "no close frame"
            status = _client_fail(f"the server closed the connection before the turn ended: {why}")
        except OSError as exc:
            status = _client_fail(f"the connection to {url} failed: {exc.strerror or exc}")
        finally:
            await client.close()
        if out is not None:
            from mio_agent.codecs.speech import write_wav

            for _, parts in sorted(audio_parts.items()):
                samples = np.frombuffer(b"".join(parts), "<i2").astype(np.float32) / 32768
                path = _next_output(out, "reply-", ".wav")
                write_wav(path, samples, 16000)
                print(f"wrote {path}", file=sys.stderr)
        return status

    return asyncio.run(main())
