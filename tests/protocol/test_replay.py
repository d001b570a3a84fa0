"""The replay buffer as a unit: what it keeps, in what order, what is lost past capacity, and the count of lost messages."""

from __future__ import annotations

import pytest

from mio_agent.protocol.replay import ReplayBuffer


def _filled(capacity: int, seqs: range | list[int]) -> ReplayBuffer:
    buf = ReplayBuffer(capacity)
    for seq in seqs:
        buf.add(seq, f"m{seq}")
    return buf


def test_a_new_buffer_is_empty() -> None:
    buf = ReplayBuffer(4)
    assert buf.capacity == 4
    assert buf.last_seq == 0
    assert buf.since(0) == ([], 0)


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match=rf"^capacity must be at least 1, got {capacity}$"):
        ReplayBuffer(capacity)


def test_capacity_one_keeps_the_last_message() -> None:
    buf = _filled(1, range(1, 4))
    assert buf.capacity == 1
    assert buf.since(0) == (["m3"], 2)
    assert buf.since(2) == (["m3"], 0)
    assert buf.since(3) == ([], 0)


def test_messages_are_kept_in_order_with_their_type() -> None:
    buf = ReplayBuffer(5)
    buf.add(1, "text")
    buf.add(2, b"\x00\x01")
    buf.add(3, "more")
    assert buf.last_seq == 3
    assert buf.since(0) == (["text", b"\x00\x01", "more"], 0)
    assert buf.since(1) == ([b"\x00\x01", "more"], 0)
    assert buf.since(2) == (["more"], 0)


def test_filled_exactly_to_capacity_nothing_is_lost() -> None:
    buf = _filled(3, range(1, 4))
    assert buf.since(0) == (["m1", "m2", "m3"], 0)
    assert buf.since(1) == (["m2", "m3"], 0)


def test_one_past_capacity_loses_the_oldest() -> None:
    buf = _filled(3, range(1, 5))
    assert buf.last_seq == 4
    assert buf.since(0) == (["m2", "m3", "m4"], 1)
    # last seen 1: the next one (2) is still kept
    assert buf.since(1) == (["m2", "m3", "m4"], 0)
    assert buf.since(2) == (["m3", "m4"], 0)
    assert buf.since(3) == (["m4"], 0)
    assert buf.since(4) == ([], 0)


def test_lost_counts_every_message_between_last_seen_and_the_oldest_kept() -> None:
    buf = _filled(3, range(1, 11))
    assert buf.since(0) == (["m8", "m9", "m10"], 7)
    assert buf.since(5) == (["m8", "m9", "m10"], 2)
    assert buf.since(6) == (["m8", "m9", "m10"], 1)
    assert buf.since(7) == (["m8", "m9", "m10"], 0)
    assert buf.since(8) == (["m9", "m10"], 0)


def test_seen_at_or_past_the_last_message_is_nothing_to_replay() -> None:
    buf = _filled(3, range(1, 6))
    assert buf.since(5) == ([], 0)
    assert buf.since(6) == ([], 0)
    assert buf.since(100) == ([], 0)


def test_gaps_in_sequence_numbers_are_not_counted_as_lost() -> None:
    # the server numbers messages for all clients; a buffer may see 10, 20, 30
    buf = _filled(3, [10, 20, 30])
    assert buf.since(0) == (["m10", "m20", "m30"], 9)
    assert buf.since(9) == (["m10", "m20", "m30"], 0)
    assert buf.since(10) == (["m20", "m30"], 0)
    assert buf.since(15) == (["m20", "m30"], 0)
    assert buf.since(29) == (["m30"], 0)
    assert buf.since(30) == ([], 0)


def test_sequence_numbers_must_grow() -> None:
    buf = _filled(3, [1, 2])
    with pytest.raises(ValueError, match=r"^sequence numbers must grow: 2 after 2$"):
        buf.add(2, "again")
    with pytest.raises(ValueError, match=r"^sequence numbers must grow: 1 after 2$"):
        buf.add(1, "older")
    # refused messages change nothing
    assert buf.last_seq == 2
    assert buf.since(0) == (["m1", "m2"], 0)
    buf.add(3, "m3")
    assert buf.since(0) == (["m1", "m2", "m3"], 0)


def test_the_first_message_must_be_numbered_from_one() -> None:
    buf = ReplayBuffer(2)
    with pytest.raises(ValueError, match=r"^sequence numbers must grow: 0 after 0$"):
        buf.add(0, "zero")
    buf.add(1, "one")
    assert buf.since(0) == (["one"], 0)


def test_negative_last_seen_counts_from_zero() -> None:
    buf = _filled(2, range(1, 4))
    assert buf.since(-1) == (["m2", "m3"], 2)


def test_an_empty_buffer_counts_from_the_first_message_it_will_get() -> None:
    # the protocol refuses a negative last_seq; the arithmetic is still that of a buffer whose next
    # message is last_seq + 1: everything after -1 up to it (seq 0) is "lost"
    buf = ReplayBuffer(2)
    assert buf.since(-1) == ([], 1)
    assert buf.since(-3) == ([], 3)
