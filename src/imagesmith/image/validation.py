"""Check image bytes before anything decodes their pixels: format by content (never by name or
header), dimensions read from the header against a pixel budget, then a full decode to catch
truncated or corrupt files."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from imagesmith.errors import ValidationFailed

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# 4096 x 4096 (16.8 MP): 7x the largest model input (SDXL's 1536 x 1536) and every 12 MP camera
# photo; a decoded image this size is 67 MB of RGBA. Larger claims are refused from the header.
MAX_PIXELS = 4096 * 4096


class InvalidImage(ValidationFailed):
    code = "INVALID_IMAGE"


class UnsupportedImage(InvalidImage):
    code = "UNSUPPORTED_IMAGE"


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.mime_type]


def sniff_format(data: bytes) -> str | None:
    """The MIME type from magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding it; None when it cannot be
    read. Not a validation: `inspect_image` is."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # whatever Pillow makes of a broken header: inspect_image says why
        return None
    return width, height


def inspect_image(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    # Pillow (~2 MB) loads with the first image a process checks: an API that takes no
    # uploads never holds it.
    from PIL import Image, UnidentifiedImageError

    mime = sniff_format(data)
    if mime is None:
        raise UnsupportedImage(
            "Unsupported image format: send PNG, JPEG or WebP (checked by content)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"Image is {width}x{height} = {width * height} pixels; the limit is "
                    f"{max_pixels} pixels"
                )
            if FORMATS.get(image.format or "") != mime:
                raise InvalidImage("Image content does not match its format signature")
            image.load()  # now decode: truncated or corrupt data fails here
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"Image is too large to decode safely: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as exc:
        raise InvalidImage(f"Image is truncated or corrupt: {exc}") from None
    return ImageInfo(mime, width, height)
