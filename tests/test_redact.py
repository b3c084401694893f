"""Redaction (`workflowd.redact`): secret fields blanked, URL passwords and ticket or token
query values scrubbed from any text."""

from __future__ import annotations

from workflowd.redact import REDACTED, redact_secrets, redact_text


def test_url_passwords_and_query_secrets() -> None:
    """The password of a URL goes, its user stays; ticket= and token= values go."""
    assert redact_text("postgresql://wf:hunter2@db/wf") == "postgresql://wf:***@db/wf"
    assert redact_text("postgresql://u:pw@h:5/d?x=1") == "postgresql://u:***@h:5/d?x=1"
    assert redact_text("postgresql://h/d") == "postgresql://h/d"
    # An IPv6 host keeps its brackets; a password with an `@` goes whole.
    assert redact_text("postgresql://u:pw@[::1]:5432/d") == "postgresql://u:***@[::1]:5432/d"
    assert redact_text("postgresql://u:p@ss@db/d") == "postgresql://u:***@db/d"
    assert redact_text("connect to postgresql://wf:p%40ss@db:5432/x failed") == \
        "connect to postgresql://wf:***@db:5432/x failed"
    assert redact_text("GET /ws?after=3&ticket=abc.def&x=1") == "GET /ws?after=3&ticket=***&x=1"
    assert redact_text("/steps/a/progress?TOKEN=zzz") == "/steps/a/progress?TOKEN=***"
    assert redact_text("mailto:ana@example.com and key=value") == \
        "mailto:ana@example.com and key=value"


def test_processor_blanks_secret_fields_everywhere() -> None:
    """Fields named like secrets are blanked, nested ones too; the rest is scrubbed."""
    event = {"event": "x", "token": "t0k", "Authorization": "Bearer t0k", "ok": 3,
             "callback": {"progress_url": "http://h/p", "token": "t0k"},
             "items": [{"secret": "s"}, "postgresql://u:pw@h/d"],
             "url": "https://u:pw@h/x?ticket=abc"}
    out = redact_secrets(None, "info", event)
    assert out["token"] == REDACTED
    assert out["Authorization"] == REDACTED
    assert out["callback"] == {"progress_url": "http://h/p", "token": REDACTED}
    assert out["items"] == [{"secret": REDACTED}, "postgresql://u:***@h/d"]
    assert out["url"] == "https://u:***@h/x?ticket=***"
    assert out["ok"] == 3
