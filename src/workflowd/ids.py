"""Identifiers: time-ordered execution ids (UUID version 7) and short request ids.

Version 7 puts the creation time in milliseconds first, so ids made together sort together:
the store's indexes keyed by execution id grow at their end instead of at random pages. The
random part comes from the OS (unguessable), drawn in blocks to spare a system call per id.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_execution_id", "new_request_id"]

_BLOCK = 4096


class _Entropy:
    __slots__ = ("buffer", "offset")

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = _BLOCK

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.buffer):
            self.buffer = os.urandom(_BLOCK)
            self.offset = 0
        start = self.offset
        self.offset += n
        return self.buffer[start:self.offset]


_entropy = _Entropy()


def new_execution_id() -> str:
    """A UUID version 7 (RFC 9562) as text: 48 bits of Unix milliseconds, then 74 random bits."""
    random = int.from_bytes(_entropy.take(10))
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (random >> 68 & 0xFFF) << 64 \
        | 0b10 << 62 | (random & (1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_request_id() -> str:
    """16 hex digits naming one request in the logs."""
    return _entropy.take(8).hex()
