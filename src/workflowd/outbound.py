"""Where the service may send requests (callback_url, webhooks, external steps' `url=`).

Never to a link-local address (169.254.0.0/16, fe80::/10) or a cloud metadata service, whatever
the configuration says: those hand out the machine's credentials to whoever asks from it. When
`[outbound] allow_hosts` is set, only to the hosts it names. A URL is checked when it is given
(a submit, the config, a definition), and every address DNS answers for its host is checked
again when it is sent, because the answer can change in between (DNS rebinding): see
`api.delivery`, which connects only to addresses that passed.

Pure checks, no I/O: nothing here resolves a name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "OutboundPolicy",
    "OutboundRefused",
    "check_outbound_literal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names of metadata services; the addresses below are the real guard (any name that resolves
# to one is refused when sent), these catch the names before anything is queued.
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog",  # GCP
    "instance-data", "instance-data.ec2.internal",  # AWS
    "metadata.azure.internal", "metadata.tencentyun.com", "metadata.platformequinix.com",
})
# Metadata addresses outside the link-local ranges (which are refused whole).
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud (classic)
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC = frozenset("0123456789abcdefx.")


class OutboundRefused(ValueError):
    """A URL or an address the service will not send to; the message names the host only."""


def _literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a resolver would take (`2852039166` too)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if set(host) <= _NUMERIC:
        try:  # the legacy forms (decimal, hex, octal, fewer parts) getaddrinfo accepts
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _address_problem(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (problem := _address_problem(embedded)):
            return problem
        ip = ip if ip.scope_id is None else ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if ip in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if ip.is_link_local:
        return "is a link-local address"
    return None


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The rules for one configuration: `allow_hosts` empty means any host but the refused."""

    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str]) -> OutboundPolicy:
        return cls(frozenset(h.strip().strip("[]").lower().rstrip(".") for h in hosts
                             if h.strip()))

    def check_url(self, url: str) -> str:
        """The URL's host if the service may send there; else `OutboundRefused`."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - a malformed port raises here, not later
        except ValueError:
            raise OutboundRefused("not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise OutboundRefused("only http and https URLs are allowed")
        if not host:
            raise OutboundRefused("the URL has no host")
        host = host.rstrip(".")
        self.check_host(host)
        return host

    def check_host(self, host: str) -> None:
        """Refuse a metadata name, a refused address literal, or a host not allowed."""
        host = host.lower().rstrip(".")
        if host in METADATA_HOSTS:
            raise OutboundRefused(f"{host!r} is a cloud metadata host")
        ip = _literal(host)
        if ip is not None and (problem := _address_problem(ip)):
            raise OutboundRefused(f"{host!r} {problem}")
        if self.allow_hosts and not self._allowed(host, ip):
            raise OutboundRefused(f"{host!r} is not in [outbound] allow_hosts")

    def check_address(self, address: str) -> None:
        """Refuse a resolved address that is link-local or a metadata service."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise OutboundRefused(f"{address!r} is not an address") from None
        if problem := _address_problem(ip):
            raise OutboundRefused(f"{address!r} {problem}")

    def _allowed(self, host: str, ip: IPAddress | None) -> bool:
        if host in self.allow_hosts:
            return True
        if ip is not None:
            return any(_literal(allowed) == ip for allowed in self.allow_hosts)
        return any(allowed.startswith("*.") and host.endswith(allowed[1:])
                   for allowed in self.allow_hosts)


def check_outbound_literal(url: str, policy: OutboundPolicy | None = None) -> str:
    """The URL's host if `policy` lets the service send there, as far as the URL's text tells
    (default: only the rules that always hold; `[outbound] allow_hosts` applies when sent)."""
    return (policy or OutboundPolicy()).check_url(url)
