"""Where the service may send requests of its own (`http` steps, external step dispatch).

Link-local and cloud metadata addresses are always refused, so a definition can never read a
machine's credentials (API.md §8). `check_outbound` is the one entry point: the rules of
`[outbound]` (allowed hosts) are to be added behind it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["OutboundRefused", "check_outbound", "check_outbound_literal"]

# Metadata services reachable by name or at addresses outside the link-local ranges.
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog",
                             "instance-data", "instance-data.ec2.internal"})
_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))


class OutboundRefused(ValueError):
    """A URL the service will not call."""


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address.is_unspecified or address in _METADATA_ADDRESSES


def check_outbound_literal(url: str) -> str:
    """The URL's host, if the URL is one the service may call as far as its text tells (a
    scheme of http or https, a host, no link-local or metadata address or name)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise OutboundRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise OutboundRefused(f"{url!r} is not an http(s) URL with a host")
    if host.rstrip(".").lower() in _METADATA_NAMES:
        raise OutboundRefused(f"{host!r} is a metadata service: refused")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if _refused(address):
        raise OutboundRefused(f"{host} is a link-local or metadata address: refused")
    return host


async def check_outbound(url: str) -> None:
    """Refuse a URL the service may not call, looking at every address its host resolves to
    (a name that points at a metadata address is refused like the address)."""
    host = check_outbound_literal(url)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OutboundRefused(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _refused(address):
            raise OutboundRefused(f"{host!r} resolves to {address}, a link-local or metadata "
                                  "address: refused")
