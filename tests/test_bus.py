"""EventBus: policies for full queues, control events first, thread-safe publishing, many subscribers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from mio_agent import bus as bus_module
from mio_agent.bus import EventBus, Subscription, SubscriptionClosed
from mio_agent.events import AudioOut, Event, Interrupt, PlaybackClear, TextDelta, TurnEnded


def delta(i: int, turn: int = 1) -> TextDelta:
    return TextDelta(session="s", turn=turn, text=str(i))


def texts(evs: list[Event]) -> list[str]:
    return [ev.text if isinstance(ev, TextDelta) else ev.type for ev in evs]


async def drain_now(sub: Subscription) -> list[Event]:
    """Everything queued right now; get() returns at once while something is queued."""
    return [await asyncio.wait_for(sub.get(), 1) for _ in range(sub.pending)]


def test_all_is_complete() -> None:
    for name in bus_module.__all__:
        assert hasattr(bus_module, name), name


async def test_delivers_in_order_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe("display")
    for i in range(5):
        bus.publish(delta(i))
    got = [await sub.get() for _ in range(5)]
    assert texts(got) == ["0", "1", "2", "3", "4"]
    assert sub.delivered == 5 and sub.dropped == 0 and sub.pending == 0
    assert bus.published == 5


async def test_waiting_consumer_wakes_on_publish() -> None:
    bus = EventBus()
    sub = bus.subscribe("display")
    received: list[Event] = []

    async def consume() -> None:
        async for ev in sub:
            received.append(ev)

    task = asyncio.create_task(consume(), name="consumer")
    await asyncio.sleep(0)  # the consumer is now parked in `get`, waiting
    bus.publish(delta(1))
    bus.publish(delta(2))
    # closing with drain hands out what is queued, then ends the loop: the consumer saw both
    sub.close(drain=True)
    await asyncio.wait_for(task, 60)
    assert texts(received) == ["1", "2"]


async def test_slow_consumer_never_stalls_the_publisher() -> None:
    bus = EventBus()
    stuck = bus.subscribe("stuck", maxsize=8)  # never read at all
    slow = bus.subscribe("slow", maxsize=8)
    fast = bus.subscribe("fast", maxsize=2000)
    slow_seen: list[Event] = []

    release = asyncio.Event()

    async def slow_consumer() -> None:
        async for ev in slow:
            slow_seen.append(ev)
            await release.wait()  # stuck on its first event until the publisher is done

    task = asyncio.create_task(slow_consumer(), name="slow-consumer")
    for i in range(1000):
        bus.publish(delta(i))
        await asyncio.sleep(0)  # the consumers get the loop between publishes
    # the publisher finished while the slow consumer still held its first event: it never waited
    assert len(slow_seen) == 1
    assert slow.pending == 8 and slow.dropped == 1000 - 1 - 8
    assert fast.pending == 1000 and stuck.pending == 8
    assert stuck.dropped == 992
    release.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    bus = EventBus()
    sub = bus.subscribe("display", maxsize=4, policy="drop_oldest")
    for i in range(10):
        bus.publish(delta(i))
    assert sub.dropped == 6 and sub.pending == 4
    assert texts(await drain_now(sub)) == ["6", "7", "8", "9"]
    assert sub.closed_reason is None


async def test_drop_oldest_never_evicts_a_control_event() -> None:
    bus = EventBus()
    sub = bus.subscribe("speaker", maxsize=2)
    bus.publish(Interrupt(session="s", turn=1))
    for i in range(6):
        bus.publish(delta(i))
    assert texts(await drain_now(sub)) == ["interrupt", "4", "5"]
    assert sub.dropped == 4


async def test_control_events_jump_the_queue() -> None:
    bus = EventBus()
    sub = bus.subscribe("speaker")
    bus.publish(AudioOut(session="s", turn=1, pcm=b"\0\0", sample_rate=24000, seq=0))
    bus.publish(delta(1))
    bus.publish(Interrupt(session="s", turn=1, reason="barge-in"))
    bus.publish(delta(2))
    bus.publish(PlaybackClear(session="s", turn=1))
    got = [await sub.get() for _ in range(5)]
    assert [ev.type for ev in got] == ["interrupt", "playback.clear", "audio.out", "text.delta", "text.delta"]
    assert texts(got[3:]) == ["1", "2"]


async def test_disconnect_closes_a_stuck_subscriber_and_spares_the_others() -> None:
    bus = EventBus()
    client = bus.subscribe("ws-client", maxsize=3, policy="disconnect")
    display = bus.subscribe("display", maxsize=100)
    for i in range(5):
        bus.publish(delta(i))
    assert client.closed
    assert client.closed_reason is not None and "fell behind" in client.closed_reason
    assert "maxsize 3" in client.closed_reason
    # The three queued events and the one that did not fit are dropped; the fifth never reached it.
    assert client.dropped == 4 and client.pending == 0
    assert client not in bus.subscriptions and display in bus.subscriptions
    assert [ev async for ev in client] == []
    with pytest.raises(SubscriptionClosed) as info:
        await client.get()
    assert info.value.reason == client.closed_reason and "ws-client" in str(info.value)
    assert display.pending == 5 and display.dropped == 0


async def test_disconnect_ends_a_waiting_iterator() -> None:
    bus = EventBus()
    client = bus.subscribe("ws-client", maxsize=1, policy="disconnect")
    seen: list[Event] = []

    async def consume() -> None:
        async for ev in client:
            seen.append(ev)
            await asyncio.sleep(10)  # stuck while sending to the network

    task = asyncio.create_task(consume(), name="stuck-client")
    bus.publish(delta(0))
    await asyncio.sleep(0.01)  # the consumer took event 0 and is stuck
    bus.publish(delta(1))
    bus.publish(delta(2))  # queue full: disconnect
    assert client.closed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert texts(seen) == ["0"]


def test_publish_threadsafe_from_worker_threads() -> None:
    async def main() -> list[Event]:
        bus = EventBus()
        sub = bus.subscribe("log", maxsize=10_000)

        def worker(turn: int) -> None:
            for i in range(300):
                bus.publish_threadsafe(delta(i, turn=turn))
            bus.publish_threadsafe(TurnEnded(session="s", turn=turn, reason="completed"))

        threads = [threading.Thread(target=worker, args=(t,), name=f"worker-{t}") for t in (1, 2)]
        for th in threads:
            th.start()
        got: list[Event] = []
        ended = 0
        while ended < 2:
            ev = await asyncio.wait_for(sub.get(), 5)
            got.append(ev)
            ended += isinstance(ev, TurnEnded)
        for th in threads:
            th.join()
        return got

    got = asyncio.run(main())
    assert len(got) == 602
    for turn in (1, 2):
        mine = [ev for ev in got if ev.turn == turn and isinstance(ev, TextDelta)]
        assert texts(list(mine)) == [str(i) for i in range(300)]  # per-thread order kept


async def test_plain_publish_from_another_thread_is_refused() -> None:
    bus = EventBus()
    bus.subscribe("display")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            bus.publish(delta(0))
        except RuntimeError as exc:
            errors.append(exc)

    th = threading.Thread(target=worker, name="wrong-thread")
    th.start()
    th.join()
    assert len(errors) == 1 and "publish_threadsafe" in str(errors[0])


def test_publish_threadsafe_needs_a_bound_loop() -> None:
    with pytest.raises(RuntimeError, match="not bound to a loop"):
        EventBus().publish_threadsafe(delta(0))


def on_turn(n: int) -> Callable[[Event], bool]:
    return lambda ev: ev.turn == n


async def test_many_subscribers_with_filters() -> None:
    bus = EventBus()
    subs = [bus.subscribe(f"turn-{n}", filter=on_turn(n)) for n in range(50)]
    everything = bus.subscribe("all", maxsize=1000)
    for n in range(50):
        for i in range(3):
            bus.publish(delta(i, turn=n))
    for n, sub in enumerate(subs):
        got = await drain_now(sub)
        assert [ev.turn for ev in got] == [n, n, n] and texts(got) == ["0", "1", "2"]
    assert everything.pending == 150
    assert len(bus.subscriptions) == 51


async def test_a_failing_filter_skips_the_event_for_that_subscriber_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()

    def broken(ev: Event) -> bool:
        raise KeyError("oops")

    bad = bus.subscribe("bad", filter=broken)
    good = bus.subscribe("good")
    with caplog.at_level(logging.ERROR, logger="mio_agent.bus"):
        bus.publish(delta(0))
    assert bad.pending == 0 and good.pending == 1
    assert "filter of subscription 'bad' failed" in caplog.text


async def test_block_policy_makes_publish_wait_and_loses_nothing() -> None:
    bus = EventBus()
    log_sub = bus.subscribe("session-log", maxsize=2, policy="block")
    display = bus.subscribe("display", maxsize=100)
    high_water = 0

    async def producer() -> None:
        nonlocal high_water
        for i in range(20):
            await bus.publish_wait(delta(i))
            high_water = max(high_water, log_sub.pending)

    task = asyncio.create_task(producer(), name="producer")
    got: list[Event] = []
    for _ in range(20):
        got.append(await log_sub.get())
        await asyncio.sleep(0.001)
    await asyncio.wait_for(task, 60)
    assert texts(got) == [str(i) for i in range(20)]
    assert high_water <= 2 and log_sub.dropped == 0
    assert display.pending == 20


async def test_publish_wait_does_not_wait_for_other_policies_or_unwanted_events() -> None:
    bus = EventBus()
    bus.subscribe("display", maxsize=1)
    log_sub = bus.subscribe("log", maxsize=1, policy="block", filter=lambda ev: isinstance(ev, TurnEnded))
    for i in range(5):
        await asyncio.wait_for(bus.publish_wait(delta(i)), 1)
    assert log_sub.pending == 0


async def test_plain_publish_to_a_full_block_subscriber_queues_past_maxsize() -> None:
    bus = EventBus()
    log_sub = bus.subscribe("log", maxsize=2, policy="block")
    for i in range(5):
        bus.publish(delta(i))
    assert log_sub.pending == 5 and log_sub.dropped == 0


async def test_publish_wait_returns_when_the_blocking_subscriber_closes() -> None:
    bus = EventBus()
    log_sub = bus.subscribe("log", maxsize=1, policy="block")
    bus.publish(delta(0))
    task = asyncio.create_task(bus.publish_wait(delta(1)), name="waiting-publisher")
    await asyncio.sleep(0.01)
    assert not task.done()
    log_sub.close("log closed")
    await asyncio.wait_for(task, 60)


async def test_bus_close_drains_then_ends_every_consumer() -> None:
    bus = EventBus()
    a = bus.subscribe("a")
    b = bus.subscribe("b")
    bus.publish(delta(0))
    bus.publish(delta(1))
    bus.close("shutdown")
    assert [texts([ev async for ev in sub]) for sub in (a, b)] == [["0", "1"], ["0", "1"]]
    assert a.closed_reason == "shutdown"
    bus.publish(delta(2))  # ignored
    late = bus.subscribe("late")
    assert late.closed and late.pending == 0


async def test_timed_out_gets_lose_nothing() -> None:
    bus = EventBus()
    sub = bus.subscribe("poller")
    for _ in range(20):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.001)
    bus.publish(delta(7))
    assert texts([await asyncio.wait_for(sub.get(), 1)]) == ["7"]


async def test_discard_drops_stale_data_but_keeps_control() -> None:
    bus = EventBus()
    speaker = bus.subscribe("speaker")
    for seq in range(3):
        bus.publish(AudioOut(session="s", turn=1, pcm=b"\0\0", sample_rate=24000, seq=seq))
    bus.publish(PlaybackClear(session="s", turn=1))
    bus.publish(AudioOut(session="s", turn=2, pcm=b"\0\0", sample_rate=24000, seq=0))
    removed = speaker.discard(lambda ev: isinstance(ev, AudioOut) and ev.turn <= 1)
    assert removed == 3 and speaker.dropped == 3
    assert [(ev.type, ev.turn) for ev in await drain_now(speaker)] == [
        ("playback.clear", 1),
        ("audio.out", 2),
    ]


async def test_context_manager_closes_and_unsubscribes() -> None:
    bus = EventBus()
    with bus.subscribe("temp") as sub:
        bus.publish(delta(0))
        assert sub in bus.subscriptions
    assert sub.closed and sub.dropped == 1 and sub not in bus.subscriptions
    assert "temp" in repr(sub) and "closed" in repr(sub)


async def test_bad_arguments() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="maxsize"):
        bus.subscribe("x", maxsize=0)
    with pytest.raises(ValueError, match="drop_oldest, disconnect, block"):
        bus.subscribe("x", policy="newest")  # type: ignore[arg-type]


async def test_a_wake_up_is_passed_on_when_the_woken_reader_is_cancelled() -> None:
    bus = EventBus()
    sub = bus.subscribe("shared")
    first = asyncio.create_task(sub.get(), name="reader-a")
    second = asyncio.create_task(sub.get(), name="reader-b")
    await asyncio.sleep(0)  # both wait, first in line
    bus.publish(delta(1))  # wakes the first reader…
    first.cancel()  # …which is cancelled before it runs
    got = await asyncio.wait_for(second, 60)
    assert texts([got]) == ["1"]
    assert first.cancelled()


async def test_room_waits_for_a_full_block_subscriber_and_only_for_it() -> None:
    bus = EventBus()
    log = bus.subscribe("log", maxsize=2, policy="block")
    display = bus.subscribe("display", maxsize=1, policy="drop_oldest")
    for i in range(2):
        bus.publish(delta(i))
    assert display.pending == 1  # a full drop_oldest subscriber never holds producers back
    waiter = asyncio.create_task(bus.room())
    await asyncio.sleep(0)  # one pass of the loop: the waiter is parked on the log's queue
    assert not waiter.done()
    assert (await log.get()).text == "0"  # type: ignore[attr-defined]
    await asyncio.wait_for(waiter, 60)
    # with room, it returns at once; a closed bus never holds anyone
    await asyncio.wait_for(bus.room(), 60)
    bus.publish(delta(2))
    bus.close()
    await asyncio.wait_for(bus.room(), 60)
