"""The outbound policy (`workflowd.outbound`): link-local and metadata refused in every
spelling, `[outbound] allow_hosts` honoured. Pure checks: nothing is resolved or sent."""

from __future__ import annotations

import pytest

from workflowd.outbound import OutboundPolicy, OutboundRefused

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://169.254.0.1:8080/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://100.100.100.200/latest/meta-data",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://2852039166/",  # 169.254.169.254 as one number
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "https://user:pw@169.254.169.254/",
    "ftp://example.com/",
    "http:///nohost",
    "http://example.com:99999/",
]
ALLOWED = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "https://hooks.example.com/x?y=1",
    "http://10.0.0.5/",
    "http://[::1]:9000/",
    "http://169.255.0.1/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_in_every_spelling(url: str) -> None:
    """Link-local and metadata addresses and names, however written, are refused."""
    with pytest.raises(OutboundRefused) as refused:
        OutboundPolicy().check_url(url)
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize("url", ALLOWED)
def test_others_allowed_without_a_list(url: str) -> None:
    """Without allow_hosts anything else may be called, loopback and private networks too."""
    OutboundPolicy().check_url(url)


def test_allow_hosts() -> None:
    """With allow_hosts only those hosts (and `*.` subdomains) are allowed; metadata never."""
    policy = OutboundPolicy.of(["hooks.example.com", "*.workers.internal", "10.0.0.5", "[::1]",
                                "169.254.169.254"])
    for url in ("https://hooks.example.com/a", "http://HOOKS.example.com./b",
                "http://a.workers.internal/", "http://b.c.workers.internal:81/",
                "http://10.0.0.5/", "http://[::1]/"):
        policy.check_url(url)
    for url in ("https://example.com/", "http://workers.internal/", "http://10.0.0.6/",
                "http://evilworkers.internal/", "http://169.254.169.254/"):
        with pytest.raises(OutboundRefused):
            policy.check_url(url)


def test_resolved_addresses() -> None:
    """The send-time check of what DNS answered."""
    policy = OutboundPolicy()
    for address in ("169.254.169.254", "fe80::1", "fd00:ec2::254", "::ffff:169.254.1.1",
                    "fe80::1%eth0", "not-an-address"):
        with pytest.raises(OutboundRefused):
            policy.check_address(address)
    for address in ("127.0.0.1", "93.184.216.34", "2606:2800:220:1::"):
        policy.check_address(address)
