"""Fuzzing the server side of the WebSocket protocol (docs/protocol.md) with hypothesis, over real sockets.

One server per module runs on its own thread and event loop, so hypothesis drives plain blocking
`websockets` clients. Every example ends with the checks of the contract: each answer is a
documented error (or an `error` event with a documented code), each close has a documented code
and reason, nothing is logged at ERROR (no traceback), and afterwards the same session still takes
a text turn to its `turn.ended` and resumes from an earlier seq with exactly the messages it had
received (same seqs, same bytes: no gap, no duplicate).

The oracles are written from docs/protocol.md, not from the server's validation code."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

from mio_agent.config import ServerConfig, load_config
from mio_agent.protocol import HEADER, Frame, FrameKind, pack_frame, unpack_frame
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

TIMEOUT = 60.0
"""Only guards against a hang: every wait ends as soon as the awaited message arrives."""
MAX_MESSAGE_BYTES = 8 << 20
"""`server.max_message_bytes` (the default, stated in docs/protocol.md)."""
MAX_TEXT_CHARS = 20_000
TOKEN = "fuzz-secret"

# -- what docs/protocol.md allows -----------------------------------------------------------------
DOC_CODES = frozenset(
    {
        "protocol.json", "protocol.type", "protocol.field", "protocol.invalid", "protocol.frame",
        "protocol.order", "protocol.version", "protocol.timeout", "auth.token", "session.gone",
        "limit.sessions", "limit.server", "audio.stream", "audio.format", "audio.rate", "image.stream",
        "image.size", "video.stream", "video.format", "invoke.image", "replay.gap",
    }
)  # fmt: skip
DOC_PREFIXES = ("input.", "capability.", "reply.")
HANDSHAKE_CODES = frozenset(
    {
        "protocol.json", "protocol.type", "protocol.field", "protocol.order", "protocol.version",
        "auth.token", "session.gone", "limit.sessions", "limit.server",
    }
)  # fmt: skip
CLOSE_TOO_BIG = 1009
"""A message over `server.max_message_bytes`: the WebSocket layer closes with 1009 (message too big)."""
CLOSE_BAD_UTF8 = 1007
"""A text frame that is not UTF-8: the WebSocket layer closes with 1007 (invalid data)."""
CLIENT_TYPES = (
    "audio.start", "audio.end", "text", "image", "video.start", "video.end", "invoke", "interrupt",
    "playback", "mute", "ping",
)  # fmt: skip
# (kind, required) of each field, as the table of docs/protocol.md says
DOC_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "hello": {"protocol": ("int", True), "client": ("str", False), "mode": ("str", False),
              "token": ("str", False), "resume": ("obj", False)},
    "audio.start": {"stream": ("int", True), "sample_rate": ("int", True), "channels": ("int", False),
                    "format": ("str", False)},
    "audio.end": {"stream": ("int", True)},
    "text": {"text": ("str", True)},
    "image": {"stream": ("int", True), "bytes": ("int", True), "name": ("str", False)},
    "video.start": {"stream": ("int", True), "width": ("int", True), "height": ("int", True)},
    "video.end": {"stream": ("int", True)},
    "invoke": {"name": ("str", True), "text": ("str", False), "image_stream": ("int", False)},
    "interrupt": {},
    "playback": {"turn": ("int", True), "played_ms": ("num", True)},
    "mute": {"muted": ("bool", True)},
    "ping": {"nonce": ("str", False)},
}  # fmt: skip
ECHOED = {"text": "text.in", "invoke": "capability.invoke", "interrupt": "interrupt", "mute": "mute"}
"""Accepted commands echoed at once (an `image` is echoed when its frame has come)."""
FAST_CAPABILITIES = ("text_generation", "speak", "describe_image", "transcribe", "image_editing")
"""Capabilities invoked by the fuzzer: ones that answer in milliseconds with the embedded model."""


def documented(code: Any) -> bool:
    return isinstance(code, str) and (code in DOC_CODES or code.startswith(DOC_PREFIXES))


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


# -- one real server for the module, on its own thread --------------------------------------------
class _ErrorLog(logging.Handler):
    """Every record at ERROR or above, from any logger and thread (the server's tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        """The records so far, as text (and forget them)."""
        records, self.records = self.records, []
        return [
            f"{r.name}: {r.getMessage()}" + (" (with a traceback)" if r.exc_info else "") for r in records
        ]


@dataclass
class Served:
    server: MioServer
    url: str
    loop: asyncio.AbstractEventLoop
    errors: _ErrorLog

    def assert_no_error_logged(self) -> None:
        logged = self.errors.take()
        assert logged == [], f"the server logged errors: {logged}"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    shared = SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 20, "router.transcribe": "never", "engine.seed": 1}
        )
    )
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    loop = asyncio.new_event_loop()
    started: list[MioServer] = []
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            # with a token, so that hellos without it are fuzzed too (auth.token, 4001)
            srv = MioServer(SessionHub(shared), ServerConfig(port=0, token=TOKEN))
            await srv.start()
            started.append(srv)

        loop.run_until_complete(boot())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fuzzed-server", daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT) and started
    srv = started[0]
    assert srv.cfg.max_message_bytes == MAX_MESSAGE_BYTES
    yield Served(srv, f"ws://127.0.0.1:{srv.port}/ws", loop, errors)

    async def shut() -> None:
        await srv.close()
        await srv.hub.aclose()

    asyncio.run_coroutine_threadsafe(shut(), loop).result(TIMEOUT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(TIMEOUT)
    loop.close()
    logging.getLogger().removeHandler(errors)
    assert errors.take() == []


# -- a client that checks every message it gets ----------------------------------------------------
@dataclass(frozen=True)
class Msg:
    """A server message: its seq, its bytes as sent, and its JSON (None for a binary frame)."""

    seq: int
    raw: str | bytes
    obj: dict[str, Any] | None

    @property
    def type(self) -> str:
        return "binary" if self.obj is None else str(self.obj["type"])

    @property
    def event(self) -> dict[str, Any]:
        return self.obj["event"] if self.obj is not None and self.obj["type"] == "event" else {}


def _short(data: str | bytes) -> str:
    return repr(data) if len(data) <= 120 else f"{data[:100]!r}... ({len(data):,} in all)"


class Text(str):
    """A text frame (its repr is shortened: some are megabytes)."""

    def __repr__(self) -> str:
        return f"Text({_short(str(self))})"


class Binary(bytes):
    """A binary frame (its repr is shortened)."""

    def __repr__(self) -> str:
        return f"Binary({_short(bytes(self))})"


class BadUtf8(bytes):
    """Bytes to send as a text frame (not UTF-8: no client library would)."""

    def __repr__(self) -> str:
        return f"BadUtf8({_short(bytes(self))})"


def wire(frame: str | bytes) -> str | bytes:
    """The frame as Text or Binary (BadUtf8 stays), for short reports."""
    if isinstance(frame, BadUtf8 | Text | Binary):
        return frame
    return Text(frame) if isinstance(frame, str) else Binary(frame)


Outgoing = str | bytes
"""A frame to send: str a text frame, bytes a binary one (BadUtf8: a text frame of these bytes)."""


def parse(raw: str | bytes) -> Msg:
    if isinstance(raw, bytes):
        frame = unpack_frame(raw)
        assert frame.kind in (FrameKind.AUDIO_OUT, FrameKind.IMAGE_OUT), frame.kind
        return Msg(frame.seq, raw, None)
    obj = json.loads(raw)
    assert isinstance(obj, dict) and isinstance(obj.get("type"), str), raw[:200]
    assert type(obj.get("seq")) is int, raw[:200]
    return Msg(obj["seq"], raw, obj)


def check_documented(msg: Msg) -> None:
    """A message after the welcome is one the doc lists; an error has a documented code and is not
    fatal (after the handshake nothing is)."""
    obj = msg.obj
    if obj is None:
        return
    if obj["type"] == "error":
        assert documented(obj["code"]), obj
        assert obj["fatal"] is False, obj
        assert isinstance(obj["message"], str) and obj["message"], obj
        assert obj["ref"] is None or isinstance(obj["ref"], str), obj
    elif obj["type"] == "event":
        ev = obj["event"]
        assert isinstance(ev.get("type"), str), obj
        if ev["type"] == "error":
            assert documented(ev.get("code")), obj
    else:
        assert obj["type"] == "pong", obj


class Closed(Exception):
    """The connection closed; `close` is what the server said (None: no close frame, 1006)."""

    def __init__(self, exc: ConnectionClosed) -> None:
        super().__init__(repr(exc))
        self.close = exc.rcvd
        self.exc = exc


class Session:
    """One session of the fuzzed server, seen as a client that checks every message: seqs grow by
    one, each message is documented, and a replay after a resume is exactly what was received."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.id = ""
        self.last = 0
        self.kept: dict[int, str | bytes] = {}
        self.counter = 0

    def _hello(self, **hello: Any) -> dict[str, Any]:
        self.ws = connect(self.url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)
        # no permessage-deflate (the client offers it): a message's size is its size on the wire
        assert self.ws.response is not None and "Sec-WebSocket-Extensions" not in self.ws.response.headers
        self.ws.send(json.dumps({"type": "hello", "protocol": 1, "token": TOKEN, **hello}))
        welcome = json.loads(self.ws.recv(timeout=TIMEOUT))
        assert welcome["type"] == "welcome", welcome
        return dict(welcome)

    def open(self) -> None:
        welcome = self._hello()
        assert not welcome["resumed"] and welcome["seq"] == 0
        self.id, self.last = welcome["session"], 0

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def send(self, frame: Outgoing) -> None:
        assert self.ws is not None
        try:
            if isinstance(frame, BadUtf8):
                self.ws.send(bytes(frame), text=True)
            else:
                self.ws.send(frame)
        except ConnectionClosed as exc:
            raise Closed(exc) from None

    def recv(self) -> Msg:
        assert self.ws is not None
        try:
            raw = self.ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as exc:
            raise Closed(exc) from None
        msg = parse(raw)
        assert msg.seq == self.last + 1, f"seq {msg.seq} after {self.last}: a gap or a duplicate"
        if msg.seq in self.kept:  # a replayed message: exactly what was sent the first time
            assert self.kept[msg.seq] == raw, f"replayed seq {msg.seq} differs from the first time"
        self.kept[msg.seq] = raw
        self.last = msg.seq
        check_documented(msg)
        return msg

    def recv_until(self, done: Callable[[Msg], bool]) -> list[Msg]:
        got = []
        while True:
            got.append(msg := self.recv())
            if done(msg):
                return got

    def sync(self) -> list[Msg]:
        """Ping and read every message up to the pong: what the server answered to what came before."""
        self.counter += 1
        nonce = f"sync-{self.counter}"
        self.send(json.dumps({"type": "ping", "nonce": nonce}))
        return self.recv_until(
            lambda m: m.type == "pong" and m.obj is not None and m.obj.get("nonce") == nonce
        )

    def run(self, frames: list[Outgoing]) -> tuple[list[Msg], Closed | None]:
        """Send the frames, then sync: (the messages up to the pong, the server's close if it closed)."""
        got: list[Msg] = []
        try:
            for frame in frames:
                self.send(frame)
            got = self.sync()
        except Closed as closed:
            # what arrived before the close was checked by recv; the rest comes again on the resume
            self.ws = None
            return got, closed
        return got, None

    def check_turn(self) -> None:
        """A valid text turn gets its user.turn and then its turn.ended (not an error)."""
        self.counter += 1
        marker = f"fuzz check {self.counter}"
        self.send(json.dumps({"type": "text", "text": marker}))
        turn = None
        while True:
            ev = self.recv().event
            if ev.get("type") == "user.turn" and ev.get("text") == marker:
                turn = ev["turn"]
            elif turn is not None and ev.get("type") == "turn.ended" and ev.get("turn") == turn:
                assert ev["reason"] in ("completed", "length"), ev
                return

    def check_resume(self, last_seq: int) -> None:
        """Leave and resume from `last_seq`: the welcome, then every message after it, byte for byte
        the same as the first time (recv compares), without gap or duplicate, then new ones."""
        assert last_seq <= self.last
        self.close()
        welcome = self._hello(resume={"session": self.id, "last_seq": last_seq})
        assert welcome["resumed"] and welcome["session"] == self.id, welcome
        assert welcome["missed"] == 0 and welcome["seq"] >= self.last, welcome
        newest = welcome["seq"]
        self.last = last_seq
        while self.last < newest:
            self.recv()
        # forget what no later resume will ask for
        for seq in [s for s in self.kept if s < newest - 2000]:
            del self.kept[seq]

    def still_works(self, since: int, resume_pct: int) -> None:
        """The session takes a text turn, then resumes from a seq between `since` and the newest."""
        if self.ws is None:  # closed by the server: come back first
            self.check_resume(self.last)
        self.check_turn()
        self.check_resume(since + (self.last - since) * resume_pct // 100)


def check_close(closed: Closed, allowed: set[int]) -> Close:
    """A close is a documented one: never 1006 (no close frame) or 1011 (an exception)."""
    close = closed.close
    assert close is not None, f"the connection dropped without a close frame (1006): {closed.exc!r}"
    assert close.code in allowed, f"close {close.code} {close.reason!r}, expected one of {sorted(allowed)}"
    return close


def closes_expected(frames: list[Outgoing]) -> set[int]:
    """The closes these frames may cause after the hello: too big, not UTF-8."""
    allowed = set()
    for frame in frames:
        if (
            len(frame) > MAX_MESSAGE_BYTES
            if isinstance(frame, bytes)
            else len(frame.encode()) > MAX_MESSAGE_BYTES
        ):
            allowed.add(CLOSE_TOO_BIG)
        if isinstance(frame, BadUtf8):
            allowed.add(CLOSE_BAD_UTF8)
    return allowed


@pytest.fixture
def session(served: Served) -> Iterator[Session]:
    served.errors.take()  # a test that failed midway may have left some: they were its failure
    s = Session(served.url)
    s.open()
    yield s
    s.close()


# -- strategies: well-formed messages (per the doc) and their mutations -----------------------------
TEXT = st.text(max_size=40)  # hypothesis leaves out surrogates: a client library cannot send them
STREAMS = st.sampled_from([0, 1, 2, 7, 2**32 - 1])
HUGE_INTS = st.sampled_from([2**31, 2**32, 2**53 + 1, 2**63, 2**64, 10**30, 10**308, 10**309, 10**400])
NON_STR_SCALARS = st.none() | st.booleans() | st.integers() | HUGE_INTS | st.floats()
JSON_SCALARS = NON_STR_SCALARS | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
LONG_WORDS = st.text(st.characters(min_codepoint=0x80), min_size=30, max_size=300)
"""Long non-ASCII text (which error messages may quote)."""
SURROGATES = st.text(st.characters(codec=None, categories=["Cs"]) | st.characters(), min_size=1, max_size=6)


def _optional(
    required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy:
    return st.fixed_dictionaries(required, optional=optional)


VALID_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "audio.start": _optional(
        {
            "stream": STREAMS,
            "sample_rate": st.sampled_from([8000, 16000, 44100, 48000]) | st.integers(8000, 48000),
        },
        channels=st.sampled_from([1, 2]),
        format=st.just("pcm16"),
    ),
    "audio.end": _optional({"stream": STREAMS}),
    "text": _optional({"text": TEXT}),
    "image": _optional({"stream": STREAMS, "bytes": st.integers(0, 4096)}, name=TEXT),
    "video.start": _optional(
        {"stream": STREAMS, "width": st.integers(1, 1920), "height": st.integers(1, 1080)}
    ),
    "video.end": _optional({"stream": STREAMS}),
    "invoke": _optional({"name": st.sampled_from(FAST_CAPABILITIES) | TEXT}, text=TEXT),
    "interrupt": _optional({}),
    "playback": _optional(
        {
            "turn": st.integers(0, 2**40) | st.sampled_from([2**63, 2**64]),
            "played_ms": st.integers(0, 10**7) | st.floats(0, 1e12),
        }
    ),
    "mute": _optional({"muted": st.booleans()}),
    "ping": _optional({}, nonce=TEXT),
}
# values of the wrong JSON type for a field's kind (None is "missing", handled apart)
WRONG_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "int": TEXT | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(TEXT, st.integers(), max_size=2)
    | st.integers(max_value=-1),
    "num": TEXT | st.booleans() | st.lists(st.integers(), max_size=2) | st.integers(max_value=-1)
    | st.floats().filter(lambda x: not (math.isfinite(x) and x >= 0)),
    "str": st.integers() | st.floats() | st.booleans() | st.lists(TEXT, max_size=2) | st.dictionaries(TEXT, TEXT, max_size=2),
    "bool": st.integers() | TEXT | st.lists(st.booleans(), max_size=2),
    "obj": st.integers() | TEXT | st.booleans() | st.lists(st.integers(), max_size=2),
}  # fmt: skip
# values out of the documented range, refused with the documented code
OUT_OF_RANGE: dict[tuple[str, str], tuple[st.SearchStrategy[Any], str]] = {
    ("audio.start", "sample_rate"): (
        st.integers(0, 7999) | st.integers(48001, 10**6) | HUGE_INTS,
        "audio.format",
    ),
    ("audio.start", "channels"): (st.integers(3, 64) | st.just(0) | HUGE_INTS, "audio.format"),
    ("audio.start", "format"): (TEXT.filter(lambda f: f != "pcm16"), "audio.format"),
    ("video.start", "width"): (st.just(0) | st.integers(1921, 10**5) | HUGE_INTS, "video.format"),
    ("video.start", "height"): (st.just(0) | st.integers(1081, 10**5) | HUGE_INTS, "video.format"),
}
# values the doc does not bound (a server may take them or refuse them with protocol.field)
UNBOUNDED: dict[str, st.SearchStrategy[Any]] = {
    "int": HUGE_INTS | st.floats(0, 1e6),
    "num": st.sampled_from([10**308, 10**309, 2**1024, 10**400]) | HUGE_INTS,
    "str": st.just("x" * MAX_TEXT_CHARS) | st.just("\U0001f600" * MAX_TEXT_CHARS),
}


@dataclass(frozen=True)
class Labelled:
    """A client message and what the doc says of it: "accept", "refuse" (with the code, if the doc
    fixes it) or "either" (the doc leaves it to the server)."""

    msg: dict[str, Any]
    expect: str
    code: str | None = None
    how: str = "valid"


@st.composite
def labelled_message(draw: st.DrawFn, types: tuple[str, ...] = CLIENT_TYPES) -> Labelled:
    """A well-formed client message (per the doc's table), or one mutation of it."""
    kind = draw(st.sampled_from(types))
    fields = dict(draw(VALID_FIELDS[kind]))
    spec = DOC_FIELDS[kind]
    how = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "valid",
                "drop",
                "extra",
                "wrong",
                "null",
                "range",
                "unbounded",
                "unbounded",
                "type",
            ]
        )
    )
    msg: dict[str, Any] = {"type": kind, **fields}
    if how == "drop" and spec:
        name = draw(st.sampled_from(sorted(spec)))
        msg.pop(name, None)
        required = spec[name][1]
        return Labelled(msg, "refuse" if required else "accept", "protocol.field" if required else None, how)
    if how == "null" and spec:
        name = draw(st.sampled_from(sorted(spec)))
        msg[name] = None  # null is "missing" for an optional field; a required one is missing then
        required = spec[name][1]
        return Labelled(msg, "refuse" if required else "either", "protocol.field" if required else None, how)
    if how == "extra":
        name = draw(TEXT.filter(lambda n: n not in spec and n not in ("type", "id")))
        msg[name] = draw(JSON_VALUES)
        return Labelled(msg, "refuse", "protocol.field", how)
    if how == "wrong" and spec:
        name = draw(st.sampled_from(sorted(spec)))
        msg[name] = draw(WRONG_TYPE[spec[name][0]])
        return Labelled(msg, "refuse", "protocol.field", how)
    if how == "range":
        ranged = [f for (k, f) in OUT_OF_RANGE if k == kind]
        if ranged:
            name = draw(st.sampled_from(ranged))
            values, code = OUT_OF_RANGE[(kind, name)]
            msg[name] = draw(values)
            return Labelled(msg, "refuse", code, how)
    if how == "unbounded" and spec:
        name = draw(st.sampled_from(sorted(spec)))
        fkind = spec[name][0]
        if fkind in UNBOUNDED:
            msg[name] = draw(UNBOUNDED[fkind])
            return Labelled(msg, "either", None, how)
    if how == "type":
        msg["type"] = draw(TEXT.filter(lambda t: t not in DOC_FIELDS) | NON_STR_SCALARS)
        return Labelled(msg, "refuse", "protocol.type", how)
    if kind == "invoke" and "image_stream" in msg:
        return Labelled(msg, "either", None, how)
    return Labelled(msg, "accept", None, "valid")


def hello_after_handshake() -> st.SearchStrategy[Labelled]:
    return st.builds(
        lambda mode: Labelled({"type": "hello", "protocol": 1, **mode}, "refuse", "protocol.order", "hello"),
        _optional({}, mode=st.sampled_from(["voice", "std"])),
    )


@st.composite
def fuzz_id(draw: st.DrawFn) -> Any:
    """An `id`: mostly a valid one, sometimes too long, of the wrong type or with a lone surrogate."""
    return draw(
        st.one_of(
            TEXT,
            st.text(min_size=129, max_size=200),
            st.just("i" * 128),
            JSON_SCALARS,
            SURROGATES,
        )
    )


def _huge_message(size: int, char: str) -> str:
    """A ping whose nonce pads the frame to exactly `size` bytes of UTF-8."""
    head = '{"type":"ping","nonce":"'
    room = size - len(head) - 2
    body = char * (room // len(char.encode())) + "x" * (room % len(char.encode()))
    text = head + body + '"}'
    assert len(text.encode()) == size
    return text


@st.composite
def _text_frame(draw: st.DrawFn) -> Outgoing:
    """Any text frame a client could send: Unicode, broken JSON, other JSON, deep nesting, lone
    surrogate escapes, boundary sizes, and every client message type, well-formed or mutated."""
    kind = draw(
        st.sampled_from(
            ["unicode", "broken", "non_object", "deep", "surrogate", "near_limit", "huge", "message", "message",
             "message", "message", "with_id", "hello", "bad_utf8"]
        )
    )  # fmt: skip
    if kind in ("huge", "bad_utf8") and draw(st.integers(0, 2)):
        kind = "message"  # a connection these close is of no use for what follows: keep them rarer
    if kind == "unicode":
        return draw(st.text(max_size=200))
    if kind == "broken":
        valid = json.dumps(draw(labelled_message()).msg)
        return draw(
            st.sampled_from(
                [valid[: len(valid) // 2], valid + "}", valid + " x", "{" + valid, "\ufeff" + valid, "NaN", "[", "",
                 '{"type": "ping",}', "{'type': 'ping'}", '{"type": "ping", "type": "text"}', valid.replace('"', "'")]
            )
        )  # fmt: skip
    if kind == "non_object":
        return json.dumps(draw(JSON_SCALARS | st.lists(JSON_VALUES, max_size=4)))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 100, 1000, 10_000, 200_000]))
        shape = draw(st.sampled_from(["list", "dict", "in_text", "in_extra"]))
        nested = "[" * depth + "]" * depth if shape != "dict" else '{"a":' * depth + "1" + "}" * depth
        if shape == "in_text":
            return '{"type":"text","text":' + nested + "}"
        if shape == "in_extra":
            return '{"type":"ping","deep":' + nested + "}"
        return nested
    if kind == "surrogate":
        base = dict(draw(labelled_message()).msg)
        where = draw(st.sampled_from(["value", "name", "id", "type", "nested"]))
        bad = draw(SURROGATES)
        if where == "value":
            base[draw(st.sampled_from(sorted(base)))] = bad
        elif where == "name":
            base[bad] = 1
        elif where == "id":
            base["id"] = bad
        elif where == "type":
            base["type"] = bad
        else:
            base["x"] = [{"y": bad}]
        return json.dumps(base, ensure_ascii=True)  # the JSON escape: \ud800
    if kind == "near_limit":
        n = draw(
            st.sampled_from([MAX_TEXT_CHARS - 1, MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1, 10 * MAX_TEXT_CHARS])
        )
        char = draw(st.sampled_from(["x", "é", "\u4e2d", "\U0001f600"]))
        field = draw(
            st.sampled_from([("text", "text"), ("ping", "nonce"), ("invoke", "text"), ("image", "name")])
        )
        msg: dict[str, Any] = {"type": field[0], field[1]: char * n}
        if field[0] == "invoke":
            msg["name"] = "text_generation"
        if field[0] == "image":
            msg |= {"stream": 3, "bytes": 1}
        return json.dumps(msg, ensure_ascii=draw(st.booleans()))
    if kind == "huge":
        size = draw(st.sampled_from([MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1]))
        return _huge_message(size, draw(st.sampled_from(["x", "\u4e2d"])))
    if kind == "with_id":
        msg = dict(draw(labelled_message()).msg)
        msg["id"] = draw(fuzz_id())
        return json.dumps(msg, ensure_ascii=draw(st.booleans()))
    if kind == "hello":
        return json.dumps(draw(hello_after_handshake()).msg)
    if kind == "bad_utf8":
        return BadUtf8(
            draw(st.sampled_from([b"\xff", b'{"type":"ping","nonce":"\xc3"}', b"\xed\xa0\x80", b"\xc0\xaf"]))
        )
    return json.dumps(draw(labelled_message()).msg, ensure_ascii=draw(st.booleans()))


def text_frame() -> st.SearchStrategy[Outgoing]:
    return _text_frame().map(wire)


# -- binary frames, with a model of the documented stream rules -------------------------------------
@dataclass(frozen=True)
class Sent:
    """A frame and the error code the doc says it gets (None: accepted)."""

    frame: Outgoing
    error: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", wire(self.frame))


SMALL_DIMS = st.sampled_from([(1, 1), (2, 2), (4, 3), (8, 8)])


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


PNG = _png()


@st.composite
def binary_script(draw: st.DrawFn) -> list[Sent]:
    """Declarations (valid JSON messages) and binary frames in any order, each labelled with the
    outcome the doc gives it on a fresh connection: audio on an undeclared stream is audio.stream,
    partial samples audio.format, an image frame needs its `image` message and exactly its bytes,
    a video frame its video.start and width*height*3 bytes; a bad header is protocol.invalid; a
    server-only kind protocol.frame."""
    audio: dict[int, int] = {}
    images: dict[int, int] = {}
    video: dict[int, tuple[int, int]] = {}
    out: list[Sent] = []
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.integers(1, 10))):
        step = draw(
            st.sampled_from(
                ["audio.start", "audio.end", "image", "video.start", "video.end", "audio", "audio", "image_frame",
                 "video_frame", "random", "truncated", "header", "server_kind", "oversized"]
            )
        )  # fmt: skip
        # few stream ids, so frames often find their stream declared (or just ended)
        stream = draw(st.sampled_from([1, 2, 2**32 - 1]))
        if step == "audio.start":
            channels = draw(st.sampled_from([1, 2]))
            msg = {"type": "audio.start", "stream": stream, "sample_rate": 16000, "channels": channels}
            audio[stream] = channels
            out.append(Sent(json.dumps(msg), None))
        elif step == "audio.end":
            audio.pop(stream, None)
            out.append(Sent(json.dumps({"type": "audio.end", "stream": stream}), None))
        elif step == "image":
            size = draw(st.sampled_from([0, 1, 7, len(PNG)]))
            images[stream] = size
            out.append(Sent(json.dumps({"type": "image", "stream": stream, "bytes": size}), None))
        elif step == "video.start":
            w, h = draw(SMALL_DIMS)
            video[stream] = (w, h)
            out.append(
                Sent(json.dumps({"type": "video.start", "stream": stream, "width": w, "height": h}), None)
            )
        elif step == "video.end":
            video.pop(stream, None)
            out.append(Sent(json.dumps({"type": "video.end", "stream": stream}), None))
        elif step == "audio":
            size = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 320, 321, 322, 1599, 1600]))
            payload = rnd.randbytes(size) if draw(st.booleans()) else bytes(size)
            frame = pack_frame(Frame(FrameKind.AUDIO_IN, stream, draw(st.integers(0, 2**32 - 1)), 0, payload))
            error = (
                "audio.stream"
                if stream not in audio
                else "audio.format"
                if size % (2 * audio[stream])
                else None
            )
            out.append(Sent(frame, error))
        elif step == "image_frame":
            size = draw(st.sampled_from([0, 1, 7, len(PNG)]))
            payload = PNG if size == len(PNG) else rnd.randbytes(size)
            declared = images.pop(stream, None)
            error = "image.stream" if declared is None else "image.size" if declared != size else None
            out.append(Sent(pack_frame(Frame(FrameKind.IMAGE_IN, stream, 0, 0, payload)), error))
        elif step == "video_frame":
            dims = video.get(stream)
            right = dims[0] * dims[1] * 3 if dims else 12
            size = draw(st.sampled_from([right, right - 1, right + 1, 0, 3]))
            error = "video.stream" if dims is None else "video.format" if size != right else None
            frame = pack_frame(
                Frame(FrameKind.VIDEO_IN, stream, 0, draw(st.integers(0, 2**64 - 1)), rnd.randbytes(size))
            )
            out.append(Sent(frame, error))
            event("video frame: " + str(error))
        elif step == "random":
            data = draw(st.binary(max_size=64))
            out.append(Sent(data, _expected_for_raw(data, audio, images, video)))
            if len(data) >= HEADER.size and data[1] == FrameKind.IMAGE_IN and _expected_header_ok(data):
                images.pop(int.from_bytes(data[4:8], "big"), None)
        elif step == "truncated":
            whole = pack_frame(Frame(FrameKind.AUDIO_IN, stream, 0, 0, b"\0\0"))
            out.append(Sent(whole[: draw(st.integers(0, HEADER.size - 1))], "protocol.invalid"))
        elif step == "header":
            version = draw(st.sampled_from([0, 2, 255]))
            kind = draw(st.sampled_from([0, 4, 15, 18, 99, 255]))
            reserved = draw(st.sampled_from([1, 0xFFFF]))
            fields = [(version, 1, 0), (1, kind, 0), (1, 1, reserved)][draw(st.integers(0, 2))]
            data = HEADER.pack(*fields, stream, 0, 0) + b"\0\0"
            out.append(Sent(data, "protocol.invalid"))
        elif step == "server_kind":
            kind = draw(st.sampled_from([FrameKind.AUDIO_OUT, FrameKind.IMAGE_OUT]))
            out.append(Sent(pack_frame(Frame(kind, stream, 0, 0, b"\0\0")), "protocol.frame"))
        elif draw(st.integers(0, 9)) == 0:  # oversized: a frame just over max_message_bytes (rare: 8 MiB)
            payload = bytes(MAX_MESSAGE_BYTES - HEADER.size + 1)
            out.append(Sent(pack_frame(Frame(FrameKind.AUDIO_IN, stream, 0, 0, payload)), "close"))
    return out


def _expected_header_ok(data: bytes) -> bool:
    version, kind, reserved = data[0], data[1], int.from_bytes(data[2:4], "big")
    return version == 1 and reserved == 0 and kind in {int(k) for k in FrameKind}


def _expected_for_raw(
    data: bytes, audio: dict[int, int], images: dict[int, int], video: dict[int, tuple[int, int]]
) -> str | None:
    """The doc's outcome for arbitrary bytes in a binary frame."""
    if len(data) < HEADER.size or not _expected_header_ok(data):
        return "protocol.invalid"
    kind, stream, size = FrameKind(data[1]), int.from_bytes(data[4:8], "big"), len(data) - HEADER.size
    if kind in (FrameKind.AUDIO_OUT, FrameKind.IMAGE_OUT):
        return "protocol.frame"
    if kind == FrameKind.AUDIO_IN:
        return (
            "audio.stream" if stream not in audio else "audio.format" if size % (2 * audio[stream]) else None
        )
    if kind == FrameKind.IMAGE_IN:
        return "image.stream" if stream not in images else "image.size" if images[stream] != size else None
    dims = video.get(stream)
    return "video.stream" if dims is None else "video.format" if size != dims[0] * dims[1] * 3 else None


# -- first frames: before (or as) the hello -----------------------------------------------------------
@dataclass(frozen=True)
class First:
    """The first frame of a connection and what the doc says of it: "welcome", "fatal" (with the
    code if fixed) or "close" (a close by the WebSocket layer)."""

    frame: Outgoing
    expect: str
    code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", wire(self.frame))


def hello_json(*, ensure_ascii: bool = True, **fields: Any) -> str:
    """A hello with the server's token (a field given as None is left out)."""
    msg = {"type": "hello", "protocol": 1, "token": TOKEN, **fields}
    return json.dumps({k: v for k, v in msg.items() if v is not None}, ensure_ascii=ensure_ascii)


@st.composite
def first_frame(draw: st.DrawFn, main_session: str) -> First:
    kind = draw(
        st.sampled_from(
            ["hello", "hello", "hello_mutated", "hello_token", "hello_mode", "resume_unknown", "resume_beyond",
             "resume_negative", "resume_shape", "hello_version", "other_message", "text", "text", "binary",
             "bad_utf8", "huge"]
        )
    )  # fmt: skip
    ascii_only = draw(st.booleans())
    if kind == "hello":
        fields = draw(
            _optional({}, client=TEXT, mode=st.sampled_from(["voice", "std"]), id=st.text(max_size=128))
        )
        return First(hello_json(ensure_ascii=ascii_only, **fields), "welcome")
    if kind == "hello_mutated":
        # hello is not a message of CLIENT_TYPES: mutate its fields by hand
        how = draw(st.sampled_from(["drop", "extra", "wrong"]))
        msg: dict[str, Any] = {"type": "hello", "protocol": 1, "token": TOKEN}
        if how == "drop":
            del msg["protocol"]
        elif how == "extra":
            name = draw(TEXT.filter(lambda n: n not in DOC_FIELDS["hello"] and n not in ("type", "id")))
            msg[name] = draw(JSON_VALUES)
        else:
            name = draw(st.sampled_from(["client", "mode", "token", "resume"]))
            msg[name] = draw(WRONG_TYPE[DOC_FIELDS["hello"][name][0]])
        return First(json.dumps(msg), "fatal", "protocol.field")
    if kind == "hello_token":  # missing or wrong: auth.token, closed with 4001
        token = draw(st.none() | st.just("") | TEXT.filter(lambda t: t != TOKEN) | LONG_WORDS)
        mode = draw(st.sampled_from([None, "voice", "x"]))
        return First(hello_json(ensure_ascii=ascii_only, token=token, mode=mode), "fatal", "auth.token")
    if kind == "hello_mode":
        mode = draw(st.text(max_size=200).filter(lambda m: m not in ("voice", "std")) | LONG_WORDS)
        return First(hello_json(ensure_ascii=ascii_only, mode=mode), "fatal", "protocol.field")
    if kind.startswith("resume_"):
        which = kind.removeprefix("resume_")
        if which == "unknown":
            resume: Any = {
                "session": draw(st.text(max_size=300) | LONG_WORDS),
                "last_seq": draw(st.integers(0, 10**6) | HUGE_INTS),
            }
            return First(hello_json(ensure_ascii=ascii_only, resume=resume), "fatal", "session.gone")
        if which == "beyond":
            # the session being fuzzed, from a seq it never reached: refused, and that session goes on
            resume = {"session": main_session, "last_seq": draw(st.integers(10**7, 2**40) | HUGE_INTS)}
            return First(hello_json(resume=resume), "fatal", "protocol.field")
        if which == "negative":
            resume = {"session": main_session, "last_seq": draw(st.integers(max_value=-1))}
            return First(hello_json(resume=resume), "fatal", "protocol.field")
        resume = draw(
            st.one_of(
                st.fixed_dictionaries({"session": st.integers() | st.none(), "last_seq": st.integers(0, 9)}),
                st.fixed_dictionaries(
                    {"session": st.just(main_session), "last_seq": TEXT | st.floats() | st.none()}
                ),
                st.fixed_dictionaries({"session": st.just(main_session)}),
                st.just({}),
            )
        )
        return First(hello_json(resume=resume), "fatal", "protocol.field")
    if kind == "hello_version":
        version = draw(st.integers().filter(lambda v: v != 1) | HUGE_INTS)
        # a negative version is an unsupported one, or a mistyped field: either code will do
        code = "protocol.version" if version >= 0 else None
        return First(hello_json(protocol=version), "fatal", code)
    if kind == "other_message":
        labelled = draw(labelled_message())
        msg = labelled.msg
        if labelled.expect == "accept":
            return First(json.dumps(msg), "fatal", "protocol.order")
        return First(json.dumps(msg), "fatal")
    if kind == "binary":
        return First(draw(st.binary(max_size=64)), "fatal", "protocol.order")
    if kind == "bad_utf8":
        return First(BadUtf8(b"\xff\xfe"), "close")
    if kind == "huge":
        size = draw(st.sampled_from([MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1]))
        return First(_huge_message(size, "x"), "close" if size > MAX_MESSAGE_BYTES else "fatal", None)
    frame = draw(text_frame())
    if isinstance(frame, bytes) or len(frame.encode()) > MAX_MESSAGE_BYTES:  # bytes: BadUtf8
        return First(frame, "close")
    return First(frame, "either")


# -- the tests -----------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(frames=st.lists(text_frame(), min_size=1, max_size=6), resume_pct=st.integers(0, 100))
def test_any_text_frames_after_the_hello_get_documented_answers_and_the_session_goes_on(
    served: Served, session: Session, frames: list[Outgoing], resume_pct: int
) -> None:
    since = session.last
    got, closed = session.run(frames)
    errors = [m.obj for m in got if m.obj is not None and m.obj["type"] == "error"]
    assert len(errors) <= len(frames), errors  # at most one answer per frame (the sync's own has none)
    closes = closes_expected(frames)
    assert (closed is not None) == bool(closes), (closed, closes)  # an over-size message is never let in
    if closed is not None:
        event(f"closed {check_close(closed, closes).code}")
    else:
        event("errors" if errors else "no error")
    served.assert_no_error_logged()
    session.still_works(since, resume_pct)
    served.assert_no_error_logged()


@settings(FUZZ, max_examples=150)
@given(script=binary_script(), resume_pct=st.integers(0, 100))
def test_binary_frames_in_any_order_get_the_documented_errors_and_the_session_goes_on(
    served: Served, session: Session, script: list[Sent], resume_pct: int
) -> None:
    # the model's stream state is per connection: start each example on a fresh one
    session.check_resume(session.last)
    since = session.last
    got, closed = session.run([s.frame for s in script])
    if closed is not None:
        assert any(s.error == "close" for s in script), closed
        event(f"closed {check_close(closed, {CLOSE_TOO_BIG}).code}")
    else:
        assert all(s.error != "close" for s in script)
        codes = [m.obj["code"] for m in got if m.obj is not None and m.obj["type"] == "error"]
        assert codes == [s.error for s in script if s.error is not None]
        event(f"{len(codes)} refused, {len(script) - len(codes)} accepted")
    served.assert_no_error_logged()
    session.still_works(since, resume_pct)
    served.assert_no_error_logged()


@settings(FUZZ, max_examples=120)
@given(data=st.data(), resume_pct=st.integers(0, 100))
def test_first_frames_get_a_welcome_or_a_fatal_error_and_a_documented_close(
    served: Served, session: Session, data: st.DataObject, resume_pct: int
) -> None:
    since = session.last
    first = data.draw(first_frame(session.id), label="first")
    rest = data.draw(st.lists(text_frame() | st.binary(max_size=40).map(wire), max_size=3), label="rest")
    other = Session(served.url)
    other.ws = ws = connect(served.url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    try:
        try:
            other.send(first.frame)
            reply = ws.recv(timeout=TIMEOUT)
        except (Closed, ConnectionClosed) as exc:
            closed = exc if isinstance(exc, Closed) else Closed(exc)
            assert first.expect in ("close", "either"), (first, closed)
            event(f"closed {check_close(closed, {CLOSE_TOO_BIG, CLOSE_BAD_UTF8}).code}")
        else:
            answer = json.loads(reply)
            if answer["type"] == "welcome":
                assert first.expect in ("welcome", "either"), (first, answer)
                assert not answer["resumed"] and answer["seq"] == 0, answer
                event("welcome")
                other.id = answer["session"]
                _, closed_after = other.run(rest)
                assert (closed_after is not None) == bool(closes_expected(rest)), closed_after
                if closed_after is not None:
                    check_close(closed_after, closes_expected(rest))
            else:
                assert first.expect in ("fatal", "either"), (first, answer)
                assert answer["type"] == "error" and answer["fatal"] is True and answer["seq"] == 0, answer
                assert answer["code"] in HANDSHAKE_CODES, answer
                if first.code is not None:
                    assert answer["code"] == first.code, (first, answer)
                event(f"fatal {answer['code']}")
                with contextlib.suppress(Closed):
                    for frame in rest:  # the server reads no more: whatever follows changes nothing
                        other.send(frame)
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        ws.recv(timeout=TIMEOUT)
                close = check_close(Closed(info.value), {4001 if answer["code"] == "auth.token" else 4002})
                assert close.reason and answer["message"].startswith(close.reason), close
    finally:
        with contextlib.suppress(Exception):
            ws.close()
    served.assert_no_error_logged()
    session.still_works(since, resume_pct)
    served.assert_no_error_logged()


def test_well_formed_messages_are_accepted_and_mutated_ones_refused_as_documented(
    served: Served, session: Session
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=150)
    @given(
        batch=st.lists(labelled_message() | hello_after_handshake(), min_size=1, max_size=6),
        resume_pct=st.integers(0, 100),
    )
    def run(batch: list[Labelled], resume_pct: int) -> None:
        since = session.last
        session.counter += 1
        ids = [f"m{session.counter}-{i}" for i in range(len(batch))]
        frames: list[Outgoing] = [
            json.dumps({**item.msg, "id": mid}) for item, mid in zip(batch, ids, strict=True)
        ]
        got, closed = session.run(frames)
        assert closed is None, closed
        errors = [m.obj for m in got if m.obj is not None and m.obj["type"] == "error"]
        by_ref = {e["ref"]: e for e in errors}
        # one error per refused message, naming it
        assert len(by_ref) == len(errors) and set(by_ref) <= set(ids), errors
        accepted: list[Labelled] = []
        for item, mid in zip(batch, ids, strict=True):
            error = by_ref.get(mid)
            if item.expect == "refuse":
                assert error is not None, f"{item} was not refused"
                if item.code is not None:
                    assert error["code"] == item.code, (item, error)
            elif item.expect == "accept":
                assert error is None, f"{item} was refused: {error}"
            if error is None:
                accepted.append(item)
            event(f"{item.how}: {'refused ' + error['code'] if error else 'accepted'}")
        # what accepted messages get: a pong per ping (in order), an echo per echoed command
        pongs = [m.obj.get("nonce") for m in got if m.obj is not None and m.obj["type"] == "pong"][:-1]
        assert pongs == [item.msg.get("nonce") for item in accepted if item.msg["type"] == "ping"]
        echoes = [ECHOED[item.msg["type"]] for item in accepted if item.msg["type"] in ECHOED]
        seen = [m.event["type"] for m in got if m.event.get("type") in ECHOED.values()]
        while len(seen) < len(echoes):  # echoes come through the session's bus, maybe after the pong
            msg = session.recv()
            if msg.event.get("type") in ECHOED.values():
                seen.append(msg.event["type"])
        # control events (interrupt, mute) may overtake data events on the session's bus
        assert sorted(seen) == sorted(echoes)
        served.assert_no_error_logged()
        session.still_works(since, resume_pct)
        served.assert_no_error_logged()
        # counted once the round trip of this batch (and the turn and resume after it) passed
        outcomes["accepted"] += len(accepted)
        outcomes["refused"] += len(batch) - len(accepted)

    run()
    assert outcomes["accepted"] >= 50 and outcomes["refused"] >= 50, outcomes
