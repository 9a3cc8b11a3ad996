"""Raw camera pixels -> the model's input tensor: channels, size, [0,1] floats. Runs off the reactor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinfer.errors import InvalidInput
from twinfer.inference.datatypes import to_numpy_dtype
from twinfer.inference.model_config import ModelConfig
from twinfer.streaming.pixels import MAX_JPEG_PIXELS, PIXEL_FORMATS, decode_jpeg, frame_pixels

__all__ = ["MAX_JPEG_PIXELS", "PIXEL_FORMATS", "ImageLayout", "decode_jpeg", "image_layout", "preprocess"]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """Where channels, height and width sit in the model's per-item dims."""

    channels_first: bool
    channels: int
    height: int  # -1 = any: the frame's own size
    width: int
    dtype: np.dtype
    input_name: str


def image_layout(config: ModelConfig) -> ImageLayout:
    spec = config.inputs[0]
    dims = list(spec.dims)
    if len(dims) == 2:
        return ImageLayout(True, 0, dims[0], dims[1], to_numpy_dtype(spec.datatype), spec.name)
    if len(dims) != 3:
        raise InvalidInput(f"model {config.name!r}: input {spec.name!r} dims {dims} are not an image (C,H,W or H,W,C)")
    if dims[0] in (1, 3):
        return ImageLayout(True, dims[0], dims[1], dims[2], to_numpy_dtype(spec.datatype), spec.name)
    if dims[2] in (1, 3):
        return ImageLayout(False, dims[2], dims[0], dims[1], to_numpy_dtype(spec.datatype), spec.name)
    raise InvalidInput(f"model {config.name!r}: cannot tell the channel axis of {spec.name!r} dims {dims}")


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * image.shape[0] // height).astype(np.intp)
    cols = (np.arange(width) * image.shape[1] // width).astype(np.intp)
    return image[rows][:, cols]


def preprocess(frame: bytes, pixel_format: str, width: int, height: int, layout: ImageLayout,
               batched: bool, bottom_up: bool = False) -> np.ndarray:
    """One frame as a model input (with a batch axis of 1 when the model batches)."""
    pixels = frame_pixels(frame, pixel_format, width, height, bottom_up, gray_jpeg=layout.channels in (0, 1))
    height, width = pixels.shape[:2]
    channels = pixels.shape[2]
    image = pixels.astype(np.float32)
    image *= 1.0 / 255.0  # in place: one 4-byte-per-pixel buffer per frame, not two
    if layout.channels in (0, 1) and channels == 3:
        image = (image @ _LUMA)[:, :, None]
    elif layout.channels == 3 and channels == 1:
        image = np.repeat(image, 3, axis=2)
    target_h = height if layout.height == -1 else layout.height
    target_w = width if layout.width == -1 else layout.width
    if (target_h, target_w) != (height, width):
        image = _resize_nearest(image, target_h, target_w)
    if layout.channels == 0:
        tensor = image[:, :, 0]
    elif layout.channels_first:
        tensor = np.transpose(image, (2, 0, 1))
    else:
        tensor = image
    tensor = np.ascontiguousarray(tensor, dtype=layout.dtype)
    return tensor[None] if batched else tensor
