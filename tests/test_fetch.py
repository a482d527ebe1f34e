"""The init-image fetcher as an attacker would probe it: DNS rebinding, redirects into private
ranges, every spelling of a loopback address, a slow drip, an oversized body. All traffic stays
on 127.0.0.1: the "public" side of each test is a resolver answer and a policy, not the internet."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import pytest

from imagesmith.image.fetch import UnsafeUrl, fetch_image_bytes, is_public
from tests.pictures import png
from tests.stubs import QuietHandler, local_server

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Stub(QuietHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        Stub.hits.append(f"{self.headers.get('Host')} {self.path}")
        if self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # no Content-Length: the cap must count the stream
            for _ in range(7):
                self.wfile.write(b"\0" * 1024 * 1024)
        else:
            self.send_body(200, png(), "image/png")


def fetch(url: str, **kwargs: Any) -> bytes:
    kwargs.setdefault("max_bytes", 5 * 1024 * 1024)
    kwargs.setdefault("timeout", 5)
    return asyncio.run(fetch_image_bytes(url, **kwargs))


def only_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address == LOOPBACK


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """`rebind.test` exists only in our resolver, answered once: if anything resolved the name
    again to connect (what let a second, rebound answer through), the fetch could not succeed."""
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.1"]  # a rebinding DNS server

    Stub.hits.clear()
    with local_server(Stub) as base:
        port = base.rsplit(":", 1)[1]
        data = fetch(f"http://rebind.test:{port}/a.png", resolve=resolver, allowed=only_loopback)
    assert data.startswith(b"\x89PNG") and calls == ["rebind.test"]
    assert Stub.hits == [f"rebind.test:{port} /a.png"]  # the Host header is the name asked for


def test_a_refused_address_is_never_connected_to_nor_named() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    Stub.hits.clear()
    with local_server(Stub) as base, pytest.raises(UnsafeUrl) as refused:
        port = base.rsplit(":", 1)[1]
        fetch(f"http://innocent.test:{port}/a.png", resolve=resolver)
    assert Stub.hits == [] and "127.0.0.1" not in refused.value.message
    assert "public address" in refused.value.message


def test_a_redirect_into_a_private_range_is_refused_before_connecting() -> None:
    Stub.hits.clear()
    with local_server(Stub) as base, pytest.raises(UnsafeUrl, match="public address"):
        fetch(f"{base}/to-metadata", allowed=only_loopback)
    assert len(Stub.hits) == 1  # the first hop only; 169.254.169.254 was never contacted


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "0.0.0.0",
        "10.1.2.3",
        "169.254.169.254",
        "[fe80::1]",
        "[fd00::1]",
        "224.0.0.1",
        # Found by review: SIIT, IPv4-compatible, local-use NAT64 and site-local IPv6.
        "[::ffff:0:a00:1]",
        "[::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",
        "[fec0::1]",
    ],
)
def test_every_spelling_of_an_internal_address_is_refused(host: str) -> None:
    with pytest.raises(UnsafeUrl, match=r"non-public|resolve"):
        fetch(f"http://{host}:9/x.png")


def test_public_addresses_pass_the_policy_and_transition_forms_are_unwrapped() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:4700::1111"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert is_public(ipaddress.ip_address("::ffff:93.184.216.34"))


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[zz]/", "http://\u2100/", "http://h:99999/"]
)
def test_a_malformed_url_is_refused_not_a_crash(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        fetch(url)


def test_one_deadline_covers_a_slow_drip() -> None:
    with local_server(Stub) as base:
        started = time.monotonic()
        with pytest.raises(UnsafeUrl, match="within 1 s"):
            fetch(f"{base}/drip", timeout=1, allowed=only_loopback)
        # The drip would take 10 s; a per-read timeout never fires on it.
        assert time.monotonic() - started < 5


def test_an_oversized_body_is_cut_off_while_streaming() -> None:
    with local_server(Stub) as base, pytest.raises(UnsafeUrl, match="over the 5242880-byte"):
        fetch(f"{base}/huge", allowed=only_loopback)


async def test_a_tenant_with_slow_names_holds_up_only_its_own_lookups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getaddrinfo cannot be stopped: a lookup its caller gave up on keeps its DNS thread until
    the resolver answers. One owner (project) holds at most DNS_PER_OWNER of them, so names
    that never resolve hold up that owner's lookups, not another tenant's."""
    import socket
    import threading

    from imagesmith.image import fetch as fetching

    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host.endswith(".slow.test"):
            release.wait(30)  # a name server that never answers
            raise socket.gaierror("no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(fetching, "DNS_SECONDS", 0.3)
    attacker, tenant = fetching.resolver_for("attacker"), fetching.resolver_for("tenant")
    try:
        # Far more lookups than there are DNS threads, each given up on after 0.3 s.
        for _ in range(3):
            tried = await asyncio.gather(
                *(attacker(f"n{i}.slow.test", 80) for i in range(fetching.DNS_THREADS)),
                return_exceptions=True,
            )
            assert all(isinstance(outcome, OSError) for outcome in tried)
        assert fetching._dns_held["attacker"] == fetching.DNS_PER_OWNER
        assert await tenant("127.0.0.1", 80) == ["127.0.0.1"]  # not behind the stuck threads
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while "attacker" in fetching._dns_held:  # the threads let go once the resolver answers
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
