"""Fetch a remote image for img2img without becoming an SSRF proxy.

* http(s) only; the host is resolved **once** per hop and every address it resolves to must be
  public (unless private URLs are allowed); the connection then goes to the address that was
  checked (the URL is rewritten to it, with the original Host header and TLS server name), so a
  DNS answer that changes between the check and the connect (rebinding) cannot steer it.
* IPv4-mapped, 6to4, Teredo and NAT64 IPv6 forms are judged by the IPv4 address inside them;
  decimal, octal and hex IPv4 spellings are resolved by the system resolver like any host.
* At most 3 redirects, each checked like the first URL.
* One deadline for the whole fetch (connects, redirects, a slow drip), and a size cap counted
  while the body streams.
* Errors never name the addresses a host resolved to."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from imagesmith.errors import ValidationFailed

MAX_REDIRECTS = 3
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv6 forms that carry an IPv4 address in their low 32 bits, or lead somewhere local:
# IPv4-compatible (::a.b.c.d, deprecated), SIIT (::ffff:0:a.b.c.d), local-use NAT64.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
DNS_SECONDS = 5.0
# Lookups on their own threads: a slow DNS server never ties up the default executor that
# the local store's file reads and writes run on. A lookup a caller gave up on still holds its
# thread until the system resolver answers (getaddrinfo cannot be stopped), so each owner (a
# project) may hold at most DNS_PER_OWNER of them: names that resolve slowly, on purpose or not,
# hold up their owner's lookups, never the other tenants'.
DNS_THREADS = 16
DNS_PER_OWNER = 4
_DNS_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="dns")
_dns_lock = threading.Lock()
_dns_held: dict[str, int] = {}  # owner → its lookups on a DNS thread now

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
Policy = Callable[[IPAddress], bool]


class UnsafeUrl(ValidationFailed):
    code = "INVALID_IMAGE_URL"


def resolver_for(owner: str) -> Resolver:
    """The system resolver, counting lookups against `owner` (DNS_PER_OWNER)."""
    return functools.partial(system_resolve, owner=owner)


async def system_resolve(host: str, port: int, owner: str = "") -> list[str]:
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        async with asyncio.timeout(DNS_SECONDS):
            await _take_dns_slot(owner)
            future = _DNS_POOL.submit(lookup)
            future.add_done_callback(lambda _done: _give_dns_slot(owner))
            infos = await asyncio.wrap_future(future)
    except TimeoutError:
        raise OSError(f"no DNS answer within {DNS_SECONDS:g} s") from None
    return [str(info[4][0]) for info in infos]


async def _take_dns_slot(owner: str) -> None:
    """Wait while `owner` holds DNS_PER_OWNER lookups (slots come back from pool threads, so
    this looks every 50 ms rather than waiting on one event loop's primitive)."""
    while True:
        with _dns_lock:
            held = _dns_held.get(owner, 0)
            if held < DNS_PER_OWNER:
                _dns_held[owner] = held + 1
                return
        await asyncio.sleep(0.05)


def _give_dns_slot(owner: str) -> None:
    with _dns_lock:
        held = _dns_held.pop(owner, 1) - 1
        if held > 0:
            _dns_held[owner] = held


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries, if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64 or address in SIIT or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_public(inner)
    if isinstance(address, ipaddress.IPv6Address) and (
        address not in GLOBAL_UNICAST or address in LOCAL_NAT64
    ):
        return False  # only global unicast IPv6 is public (no site-local fec0::/10, …)
    return address.is_global and not address.is_multicast


def allow_all(_address: IPAddress) -> bool:
    return True


async def pinned_target(
    url: str,
    resolve: Resolver,
    allowed: Policy,
    *,
    what: str = "image URL",
    error: type[ValidationFailed] = UnsafeUrl,
) -> tuple[str, str, str]:
    """(the URL rewritten to a checked address, the Host header, the TLS server name); `what`
    names the URL in errors of type `error` (image URLs here, webhook targets elsewhere)."""
    named = what[:1].upper() + what[1:]
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # "http://[::1", "http://℀/": not a URL a client could mean
        raise error(f"{named} is not a valid URL: {url[:200]!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise error(f"{named} must be http(s) with a host, got {url[:200]!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise error(f"{named} has an invalid port") from None
    # One message whether the name does not resolve or resolves somewhere private: a caller
    # must not learn which internal names exist.
    refused = (
        f"{named} host '{host[:100]}' does not resolve to a public address (only public, "
        "non-private http(s) addresses are allowed)"
    )
    try:
        answers = [ipaddress.ip_address(a.split("%")[0]) for a in await resolve(host, port)]
    except (OSError, ValueError, UnicodeError):
        raise error(refused) from None
    if not answers or not all(allowed(address) for address in answers):
        raise error(refused)
    address = answers[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{port}"
    host_header = parts.netloc.rpartition("@")[2]  # as written: brackets and port kept
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return pinned, host_header, host


async def fetch_image_bytes(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    resolve: Resolver = system_resolve,
    allowed: Policy | None = None,
) -> bytes:
    """GET the URL (following up to 3 checked redirects) within `timeout` seconds in all;
    raise UnsafeUrl on any problem."""
    policy = allowed or (allow_all if allow_private else is_public)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, max_bytes, timeout, resolve, policy)
    except TimeoutError:
        raise UnsafeUrl(f"Image URL did not answer in full within {timeout:g} s") from None


async def _fetch(
    url: str, max_bytes: int, timeout: float, resolve: Resolver, policy: Policy
) -> bytes:
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            pinned, host_header, server_name = await pinned_target(url, resolve, policy)
            request = client.build_request(
                "GET",
                pinned,
                headers={"Host": host_header},
                extensions={"sni_hostname": server_name},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise UnsafeUrl(f"Could not fetch image URL ({type(exc).__name__})") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise UnsafeUrl(f"Image URL answered HTTP {response.status_code}")
                return await _read_capped(response, max_bytes)
            finally:
                await response.aclose()
    raise UnsafeUrl(f"Image URL redirected more than {MAX_REDIRECTS} times")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if (
        declared.isascii()
        and declared.isdigit()
        and len(declared) < 19
        and int(declared) > max_bytes
    ):
        raise UnsafeUrl(f"Image at URL is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise UnsafeUrl(f"Image at URL is over the {max_bytes}-byte limit")
            chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise UnsafeUrl(f"Could not fetch image URL ({type(exc).__name__})") from None
    return b"".join(chunks)
