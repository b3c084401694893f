"""Just enough PDF reading for the examples: count pages and pull the text of simple PDFs
(text drawn with `Tj`/`TJ` in plain or Flate-compressed content streams). Not a PDF library."""

from __future__ import annotations

import re
import zlib

__all__ = ["page_count", "page_texts"]

_STREAM = re.compile(rb"<<(?P<dict>.*?)>>\s*stream\r?\n(?P<data>.*?)\r?\nendstream", re.S)
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_SHOW = re.compile(rb"\((?P<text>(?:\\.|[^\\)])*)\)\s*(?:Tj|'|\")|\[(?P<array>[^\]]*)\]\s*TJ"
                   rb"|(?P<newline>T\*|Td|TD|ET)")
_STRING = re.compile(rb"\((?P<text>(?:\\.|[^\\)])*)\)")
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def page_count(pdf: bytes) -> int:
    return len(_PAGE.findall(pdf))


def page_texts(pdf: bytes) -> list[str]:
    """The text of each content stream that draws some, in file order (one per page in the
    simple PDFs this is meant for)."""
    pages: list[str] = []
    for match in _STREAM.finditer(pdf):
        data = match.group("data")
        if b"/FlateDecode" in match.group("dict"):
            try:
                data = zlib.decompress(data)
            except zlib.error:
                continue
        text = _text(data)
        if text:
            pages.append(text)
    return pages


def _text(content: bytes) -> str:
    lines: list[bytes] = []
    line = b""
    for show in _SHOW.finditer(content):
        if show.group("newline"):
            if line:
                lines.append(line)
            line = b""
        elif show.group("text") is not None:
            line += _unescape(show.group("text"))
        else:
            line += b"".join(_unescape(s.group("text"))
                             for s in _STRING.finditer(show.group("array")))
    if line:
        lines.append(line)
    return "\n".join(raw.decode("latin-1").strip() for raw in lines if raw.strip())


def _unescape(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        char = raw[i:i + 1]
        if char == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1:i + 2]
            out += _ESCAPES.get(nxt, nxt)
            i += 2
        else:
            out += char
            i += 1
    return bytes(out)
