"""Execution ids: UUID version 7, unique, ordered by the millisecond they were made in."""

from __future__ import annotations

import time
import uuid

from workflowd.ids import new_execution_id, new_request_id


def test_execution_ids_are_uuid7_and_follow_the_clock() -> None:
    first = new_execution_id()
    time.sleep(0.002)
    later = [new_execution_id() for _ in range(1000)]
    parsed = uuid.UUID(first)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == first
    assert len(set(later)) == len(later)
    assert all(first < other for other in later)
    millis = int(first.replace("-", "")[:12], 16)
    assert abs(millis - time.time() * 1000) < 60_000


def test_request_ids_are_16_hex_digits_and_differ() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
