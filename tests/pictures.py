"""Pictures for tests: PNG builders (honest ones and a decompression bomb) and readers."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encoded(
    fmt: str, size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (20, 20, 220)
) -> bytes:
    """A plain picture in `fmt` (PNG, JPEG, WEBP, GIF, …)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (20, 20, 220)) -> bytes:
    return encoded("PNG", size, color)


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, 1-bit gray: small on disk, a bomb in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def pixels(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size
