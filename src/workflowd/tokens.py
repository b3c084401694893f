"""Bearer tokens of `[auth]` (API.md §8): made at random, kept only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal, get_args

__all__ = ["CALLER_ROLES", "CallerRole", "hash_token", "new_token"]

# What a token's holder may be (API.md §8); `api.auth.MAY` says which routes each may call.
CallerRole = Literal["viewer", "submitter", "approver", "worker", "admin"]
CALLER_ROLES: tuple[CallerRole, ...] = get_args(CallerRole)


def new_token() -> str:
    """A new bearer token (256 bits, URL-safe; `wd_` tells it apart in a secret store): shown
    once, stored only as its hash."""
    return "wd_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What `[[auth.tokens]] sha256` holds: the lowercase hex SHA-256 of the token's UTF-8."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
