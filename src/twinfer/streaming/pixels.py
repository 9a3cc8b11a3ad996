"""Stream frame bytes -> pixels, the one conversion every stream uses (plain models through `preprocess`, the face
tracker through `frame_to_rgb`), so a pixel format or the bottom-up flag means the same thing for both.

Raw formats are row-major, 8 bits per channel, no row padding: GRAY8 (1 byte a pixel), RGB8 (R, G, B), RGBA8 (R, G,
B, A: Unity's TextureFormat.RGBA32) and BGRA8 (B, G, R, A: Unity's BGRA32, Unreal's FColor read-backs). Alpha is
dropped. Row 0 is the image's top row unless the stream was opened `bottom_up` (Unity textures and OpenGL read-backs
start at the bottom); the flag flips every format, JPEG included, so a client that sends a JPEG encoded from a
bottom-up buffer without flipping it first can say so too.
"""

from __future__ import annotations

import io

import numpy as np

from twinfer.errors import UnusableFrame

PIXEL_FORMATS = {"GRAY8": 1, "RGB8": 3, "RGBA8": 4, "BGRA8": 4, "JPEG": 0}  # bytes per pixel; JPEG carries its own
MAX_JPEG_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding

WRONG_SIZE = "wrong_size"
UNDECODABLE = "undecodable"
TOO_LARGE = "too_large"


def decode_jpeg(data: bytes, gray: bool, max_size: tuple[int, int] | None = None) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, C); UnusableFrame for anything Pillow cannot read as a JPEG, or (checked from the
    header, before decoding) one wider or taller than `max_size` (width, height)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if image.width * image.height > MAX_JPEG_PIXELS:
                raise UnusableFrame(TOO_LARGE, f"JPEG of {image.width}x{image.height} is larger than "
                                    f"{MAX_JPEG_PIXELS} pixels")
            if max_size is not None and (image.width > max_size[0] or image.height > max_size[1]):
                raise UnusableFrame(TOO_LARGE, f"JPEG of {image.width}x{image.height} is larger than the stream's "
                                    f"{max_size[0]}x{max_size[1]}")
            decoded = np.asarray(image.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UnusableFrame(UNDECODABLE, f"frame is not a readable JPEG: {exc}") from None
    return decoded[:, :, None] if decoded.ndim == 2 else decoded


def frame_pixels(frame: bytes, pixel_format: str, width: int, height: int, bottom_up: bool = False,
                 gray_jpeg: bool = False) -> np.ndarray:
    """One frame as uint8 (H, W, C), C 1 (GRAY8, or a JPEG decoded as grey) or 3 (R, G, B), row 0 at the top.

    A JPEG may be smaller than width x height (its own size is used), never larger. The result may be a view of
    `frame` (no copy for GRAY8 and RGB8 top-down): treat it as read-only.
    """
    if pixel_format == "JPEG":
        pixels = decode_jpeg(frame, gray=gray_jpeg, max_size=(width, height))
    else:
        channels = PIXEL_FORMATS[pixel_format]
        expected = width * height * channels
        if len(frame) != expected:
            raise UnusableFrame(WRONG_SIZE, f"frame of {len(frame)} bytes, {width}x{height} {pixel_format} needs "
                                f"{expected}")
        pixels = np.frombuffer(frame, dtype=np.uint8).reshape(height, width, channels)
        if pixel_format == "RGBA8":
            pixels = pixels[:, :, :3]
        elif pixel_format == "BGRA8":
            pixels = pixels[:, :, 2::-1]
    return pixels[::-1] if bottom_up else pixels
