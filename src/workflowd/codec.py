"""JSON in and out, through msgspec: records and plain values alike.

msgspec encodes a record in about 0.4 us and copies one with changes in 0.1 us, where a slotted
dataclass took 1.7 us (orjson) and 2.7 us (`dataclasses.replace`), measured on the bench
machine: every cycle makes several of each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

__all__ = ["NotJSON", "decoder", "dumps", "encode", "json_copy", "loads"]

T = TypeVar("T")



def _enc_hook(value: Any) -> Any:
    # A step's read-only view of its input (`context.freeze`) is stored like the dict it shows.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()
encode = _encoder.encode


class NotJSON(ValueError):
    """A value that cannot be stored as JSON (a set, an object, NaN as a key, ...)."""


def dumps(value: Any) -> str:
    """JSON text of a JSON-able value (records included)."""
    return _encoder.encode(value).decode()


def loads(text: str | bytes) -> Any:
    return _decoder.decode(text)


def json_copy(value: Any) -> Any:
    """A plain-JSON deep copy of `value`: what a step leaves, made storable and owned by us."""
    try:
        return _decoder.decode(_encoder.encode(value))
    except (TypeError, msgspec.EncodeError, msgspec.DecodeError, OverflowError) as exc:
        raise NotJSON(str(exc)) from None


def decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    """A reusable decoder of stored documents into `kind`."""
    return msgspec.json.Decoder(kind)
