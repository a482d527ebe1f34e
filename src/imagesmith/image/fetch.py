"""Fetch a remote image for img2img without becoming an SSRF proxy: http(s) only, public
addresses only (unless allowed), no redirects to elsewhere unchecked, size and time bounded."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlparse

import httpx

from imagesmith.errors import ValidationFailed

MAX_REDIRECTS = 3


class UnsafeUrl(ValidationFailed):
    code = "INVALID_IMAGE_URL"


async def check_target(url: str, allow_private: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UnsafeUrl(f"Image URL must be http(s) with a host, got {url[:200]!r}")
    if allow_private:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parsed.hostname, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnsafeUrl(f"Cannot resolve image URL host '{parsed.hostname}': {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise UnsafeUrl(
                f"Image URL host '{parsed.hostname}' resolves to {address}, a non-public address; "
                "only public http(s) URLs are fetched"
            )


async def fetch_image_bytes(
    url: str, *, max_bytes: int, timeout: float, allow_private: bool = False
) -> bytes:
    """GET the URL (following up to 3 checked redirects); raise UnsafeUrl on any problem."""
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_target(url, allow_private)
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise UnsafeUrl(f"Image URL answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise UnsafeUrl(
                            f"Image at URL is {declared} bytes; the limit is {max_bytes}"
                        )
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise UnsafeUrl(f"Image at URL is over the {max_bytes}-byte limit")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise UnsafeUrl(f"Could not fetch image URL: {type(exc).__name__}: {exc}") from None
    raise UnsafeUrl(f"Image URL redirected more than {MAX_REDIRECTS} times")
