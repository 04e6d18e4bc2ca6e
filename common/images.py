"""Every image mode PIL opens, turned into 8-bit RGB the way a user expects, or one sentence naming the file.

``Image.convert("RGB")`` clips integer grayscale (16-bit PNGs, mode ``I;16``; 32-bit ``I``) at 255, so such an
image becomes white, and drops alpha, keeping whatever colour lies under a transparent pixel. :func:`to_rgb`
instead scales integer grayscale by its bit depth (16 for ``I;16*`` and 16-bit PNGs, the TIFF's
``BitsPerSample`` for ``I``), composites images with alpha onto white (what a viewer shows), and leaves the
other modes (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``) to PIL's own conversion. A mode
whose range cannot be known (floating point ``F``, ``I`` of unknown depth or with negative values) is refused.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from common.errors import RunError

#: modes with an alpha band, composited onto white.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
#: 16-bit integer grayscale modes.
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def bit_depth(image: Image.Image) -> int | None:
    """The bits per sample of an integer grayscale image (``I;16*`` or ``I``), None when unknown."""
    if image.mode in SIXTEEN_BIT:
        return 16
    if image.mode != "I":
        return None
    if image.format == "PNG":          # PNG's deepest grayscale is 16 bits; Pillow may open it as I
        return 16
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


def to_rgb(image: Image.Image, name=None) -> Image.Image:
    """``image`` as 8-bit RGB (see the module docstring), always a new image that outlives the file ``image`` was
    opened from (an RGB image is copied, as ``convert("RGB")`` does); ``name`` (default: the file PIL opened) is
    named in the RunError of a mode that cannot be converted."""
    mode = image.mode
    name = name or getattr(image, "filename", "") or "an image"
    if mode in SIXTEEN_BIT or mode == "I":
        bits = bit_depth(image)
        values = np.asarray(image).astype(np.int64)
        if bits is None or not 1 <= bits <= 32:
            raise RunError(f"image {name} is {mode!r} (32-bit integer grayscale) of unknown bit depth, so its "
                           "values cannot be scaled to 8 bits; save it as 8-bit or 16-bit grayscale PNG, or RGB.")
        if values.size and values.min() < 0:
            raise RunError(f"image {name} is {mode!r} with negative values (down to {values.min()}), which no "
                           "8-bit RGB image holds; save it as 8-bit or 16-bit grayscale PNG, or RGB.")
        top = 2 ** bits - 1
        scaled = (np.minimum(values, top) * 255 + top // 2) // top
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise RunError(f"image {name} is 'F' (floating-point values of no fixed range), which cannot be turned into "
                       "8-bit RGB without knowing that range; save it as 8-bit or 16-bit grayscale PNG, or RGB.")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA") if mode != "La" else image.convert("LA").convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise RunError(f"image {name} is {mode!r}, which PIL cannot turn into RGB ({error}); save it as RGB or "
                       "8-bit grayscale.") from error
