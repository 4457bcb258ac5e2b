"""Image bytes -> an RGB PIL image, safely: known formats only, a pixel limit, EXIF orientation.

Every problem the bytes can cause is a ``ClientError`` (400) or ``PayloadTooLarge`` (413) whose
message says what was wrong; nothing a client sends reaches a 500 or kills the worker.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

from smneuron.errors import ClientError, PayloadTooLarge

log = logging.getLogger(__name__)

# The formats Pillow may try (its other plugins never see client bytes).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Modes converted to RGB; others (16-bit, float, multi-band scientific) are refused.
CONVERTIBLE_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "1", "P", "PA", "CMYK", "YCbCr", "I;16")
DEFAULT_MAX_PIXELS = 40_000_000
# A processor that resizes the short side up (ConvNeXt's shortest_edge) would turn a 1 x 10^6
# strip into gigabytes: such strips are refused.
MAX_ASPECT_RATIO = 100


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, where: str = "image") -> Any:
    """An RGB ``PIL.Image`` from JPEG, PNG, WebP, GIF (first frame) or BMP bytes.

    The header is read first: an image of more than ``max_pixels`` pixels is a 413 before its
    pixels are decoded (a decompression bomb costs nothing). Truncated or corrupt data, an
    unknown format and an unsupported mode are 400s.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ClientError(f"{where}: the body is empty; send the image's bytes")
    with warnings.catch_warnings():
        # Our own limit applies; Pillow's global one (a warning, then an error) must not.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image: Any = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError as err:
            raise ClientError(
                f"{where}: not a readable image (supported formats: {', '.join(FORMATS)})"
            ) from err
        except Image.DecompressionBombError as err:
            raise PayloadTooLarge(f"{where}: {err}") from err
        except (OSError, ValueError, SyntaxError) as err:  # corrupt headers
            raise ClientError(f"{where}: corrupt image header: {err}") from err
        width, height = image.size
        if width < 1 or height < 1:
            raise ClientError(f"{where}: the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"{where}: {width}x{height} = {width * height} pixels is above the limit of "
                f"{max_pixels} (SMNEURON_MAX_IMAGE_PIXELS); send a smaller image"
            )
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ClientError(
                f"{where}: a {width}x{height} image is more than {MAX_ASPECT_RATIO} times longer "
                "than wide; crop it before sending"
            )
        if image.mode not in CONVERTIBLE_MODES:
            raise ClientError(
                f"{where}: image mode {image.mode!r} is not supported; send 8-bit RGB, RGBA, "
                "grayscale, palette or CMYK images"
            )
        try:
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise ClientError(f"{where}: truncated or corrupt image data: {err}") from err


def _to_rgb(image: Any) -> Any:
    """RGB, with transparency composited onto white (as a browser shows it) and 16-bit
    grayscale scaled to 8 bits."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode == "I;16":
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
