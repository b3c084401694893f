"""Keeping secrets out of log lines and error messages.

Tokens, tickets, step tokens, webhook secrets and token hashes are only ever logged under field
names that say what they are, so a processor blanks those fields; a password inside a URL
(`postgresql://user:pass@host/db`) or a ticket or token in a query string can sit inside any
text, so every string is scrubbed of those too. Nothing here imports structlog: a processor is a
plain function of the event dict.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["REDACTED", "SECRET_FIELDS", "RedactingFilter", "redact_secrets", "redact_text",
           "redact_value"]

REDACTED = "[redacted]"
# Field names whose values are secrets wherever they appear (log fields, nested dicts).
SECRET_FIELDS = frozenset({
    "authorization", "password", "secret", "sha256", "ticket", "token", "tokens",
    "x-workflowd-token",
})
# `scheme://user:password@`: the password goes, the user stays (it says which account). The
# password runs to the last `@` before the host's path, as URL parsers read it (`p@ss` too).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^/?#\s]*@")
# `?ticket=...`, `&token=...` in a URL or a request line.
_QUERY = re.compile(r"(?P<head>[?&](?:ticket|token)=)[^&#\s]*", re.IGNORECASE)
_DEPTH = 4  # nested values are scrubbed this deep; log fields are shallow


def redact_text(text: str) -> str:
    """`text` without URL passwords and without ticket or token query values."""
    if "@" in text:
        text = _USERINFO.sub(r"\g<head>:***@", text)
    if "=" in text:
        text = _QUERY.sub(r"\g<head>***", text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """`value` with secret fields blanked and every string scrubbed (a copy where changed)."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _DEPTH:
        return value
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS
                else redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth + 1) for v in value)
    return value


def redact_secrets(logger: Any, method_name: str,
                   event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank secret fields, scrub URLs in the others."""
    for key, value in event_dict.items():
        if key.lower() in SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            if "@" in value or "=" in value:
                event_dict[key] = redact_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = redact_value(value)
    return event_dict


class RedactingFilter(logging.Filter):
    """For the standard library's loggers (aiohttp's access log shows request lines, which
    hold `?ticket=`): the message, once formatted, is scrubbed like any text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = redact_text(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            # A traceback's text (a URL with its password in an exception) is scrubbed too;
            # formatters use `exc_text` once it is set.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True
