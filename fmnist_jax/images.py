"""Turn user files (PNG/JPEG/any Pillow image, IDX, .npy) into Fashion-MNIST-like uint8 [N, 28, 28].

The model was trained on Fashion-MNIST's convention: 28x28 greyscale, a light item on a
black (0) background, the item's longest edge filling the frame. Photos are usually the
opposite (dark item on a white page), so inversion is a policy:

- `auto` (default): invert an image when its border (outer 2-pixel frame) averages above
  mid-grey, i.e. the background is light; Fashion-MNIST borders are ~0, so its own
  images are never inverted.
- `yes` / `no`: always / never invert.

Other sizes follow the dataset's recipe (Xiao et al. 2017): crop the border that matches the
background, scale the longest edge to 28 and centre on a black 28x28 canvas. Images already
28x28 are kept pixel for pixel (only greyscale and inversion), so the test set round-trips.
Scaling to [0, 1] and normalising are part of the exported model, not done here.

Untrusted files cost at most their `Limits`, each checked before the work it bounds: gzip data
is inflated on demand and never past `max_inflated_bytes`; IDX and .npy headers give the shape,
refused (wrong shape, or over `max_images`) before any pixel data is read; a picture's header
gives its size, refused over `max_pixels` before Pillow decodes it. Refusals are `ImageError`s,
and those over a limit are `TooLarge` (HTTP 413 in `serve`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28
INVERT_CHOICES = ("auto", "yes", "no")
Invert = Literal["auto", "yes", "no"]
_BORDER = 2
_LIGHT = 127.5  # a border mean above mid-grey means a light background: `auto` inverts
_TRIM_THRESHOLD = 16  # grey levels from the background that still count as background
_GZIP, _NPY, _IDX_U8 = b"\x1f\x8b", b"\x93NUMPY", b"\x00\x00\x08"
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own check backs ours up where a format decodes more (GIF frames)
# What this module does to a file, in one line: recorded in every exported model's manifest.
RULES = (
    f"fmnist_jax.images: greyscale; invert {'|'.join(INVERT_CHOICES)} (auto: border mean > {_LIGHT}); "
    f"non-{SIZE}x{SIZE} images: trim dark border, longest edge to {SIZE} (Lanczos), centre on black"
)


class ImageError(ValueError):
    """A file or array that cannot be made into 28x28 greyscale images; the message says why."""


class TooLarge(ImageError):
    """Input over one of the `Limits`, found before the work it would have cost."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What decoding one file may cost; the defaults fit local files (all of Fashion-MNIST's training set)."""

    max_inflated_bytes: int = 256 * 1024 * 1024  # gzip data inflated at most this far
    max_images: int = 100_000  # images in one IDX / .npy batch, from its header
    max_pixels: int = MAX_PIXELS  # width x height of one picture, from its header


DEFAULT_LIMITS = Limits()


def _border_mean(image: np.ndarray) -> float:
    b = min(_BORDER, max(1, min(image.shape) // 4))
    frame = np.concatenate([image[:b].ravel(), image[-b:].ravel(), image[:, :b].ravel(), image[:, -b:].ravel()])
    return float(frame.mean())


def should_invert(image: np.ndarray, invert: Invert) -> bool:
    """The inversion policy for one greyscale uint8 image (see module docstring)."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    return invert == "yes" or (invert == "auto" and _border_mean(image) > _LIGHT)


def fit(image: np.ndarray) -> np.ndarray:
    """Light-on-dark uint8 [H, W] -> [28, 28]: trim the dark border, scale longest edge to 28, centre."""
    if image.shape == (SIZE, SIZE):
        return image
    rows, cols = np.nonzero(image > _TRIM_THRESHOLD)
    if rows.size:
        image = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = image.shape
    scale = SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    top, left = (SIZE - small.shape[0]) // 2, (SIZE - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


def prepare(image: np.ndarray, invert: Invert = "auto") -> np.ndarray:
    """One greyscale uint8 [H, W] image -> Fashion-MNIST convention [28, 28]."""
    if should_invert(image, invert):
        image = 255 - image
    return fit(image)


def _greyscale(image: Image.Image) -> np.ndarray:
    """Any mode -> 8-bit greyscale; transparency is flattened onto white (how it displays)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale: rescale to 8 bits
        a = np.asarray(image, np.float64)
        hi = 65535.0 if image.mode.startswith("I") and a.max() > 255 else 255.0
        return np.clip(np.round(a * 255.0 / hi), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), np.uint8)


def _batch_size(shape: tuple[int, ...], name: str) -> int:
    """Images in an array of `shape`: [N, 28, 28], [28, 28] (one) or [N, 28, 28, 1]; any other shape is refused."""
    squeezed = shape[:-1] if len(shape) == 4 and shape[-1] == 1 else shape
    batch = (1, *squeezed) if len(squeezed) == 2 else squeezed
    if len(batch) != 3 or batch[1:] != (SIZE, SIZE):
        raise ImageError(f"{name}: expected shape [N, 28, 28] (or [28, 28], [N, 28, 28, 1]), got {list(shape)}")
    return batch[0]


def check_batch(shape: tuple[int, ...], name: str, max_images: int) -> None:
    """Refuse an array of `shape` (wrong shape, or too many images) while only its header has been read."""
    n = _batch_size(shape, name)
    if n > max_images:
        raise TooLarge(f"{name}: {n} images are over the limit of {max_images}")


def _check_numbers(dtype: np.dtype, name: str) -> None:
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ImageError(f"{name}: expected numbers, got dtype {dtype}")


def as_uint8(array: np.ndarray, name: str = "array") -> np.ndarray:
    """An array batch -> uint8 [N, 28, 28]: integers 0..255 as they are, floats in [0, 1] scaled by 255."""
    a = np.asarray(array)
    a = a.reshape(_batch_size(a.shape, name), SIZE, SIZE)
    _check_numbers(a.dtype, name)
    if a.size and not np.isfinite(a).all():
        raise ImageError(f"{name}: contains NaN or infinity")
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ImageError(
                f"{name}: float pixels must lie in [0, 1] (got {a.min():g}..{a.max():g}); send integers 0..255 instead"
            )
        return np.round(a * 255).astype(np.uint8)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ImageError(f"{name}: integer pixels must lie in 0..255 (got {a.min()}..{a.max()})")
    return a.astype(np.uint8)


def from_array(array: np.ndarray, invert: Invert = "auto", name: str = "array") -> np.ndarray:
    """A batch already at 28x28 (IDX, .npy, JSON) -> uint8 [N, 28, 28] with the inversion policy per image."""
    a = as_uint8(array, name)
    return np.stack([prepare(x, invert) for x in a]) if len(a) else a


class _Gunzip:
    """Gzip data inflated as it is read and never past `max_bytes` in all, so a bomb costs at most the cap."""

    def __init__(self, raw: bytes, name: str, max_bytes: int):
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._input, self._name, self._max_bytes, self._room = raw, name, max_bytes, max_bytes

    def read(self, n: int = -1, /) -> bytes:
        """The next `n` bytes (all if negative), fewer only where the data ends (the caller reports truncation)."""
        out = bytearray()
        while n < 0 or len(out) < n:
            if self._inflater.eof:  # a gzip file may hold several members
                if not self._inflater.unused_data:
                    break
                self._input = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            want = self._room + 1 if n < 0 else min(n - len(out), self._room + 1)
            try:
                chunk = self._inflater.decompress(self._input, want)
            except zlib.error as e:
                raise ImageError(f"{self._name}: corrupt gzip data ({e})") from e
            self._input, self._room = self._inflater.unconsumed_tail, self._room - len(chunk)
            if self._room < 0:
                raise TooLarge(f"{self._name}: gzip data inflates to more than {self._max_bytes} bytes")
            if not chunk and not self._input and not self._inflater.eof:
                break
            out += chunk
        return bytes(out)


def _npy_header(
    stream: _Gunzip | io.BytesIO, head: bytes, name: str
) -> tuple[tuple[int, ...], np.dtype, Literal["C", "F"]]:
    """Shape, dtype and memory order, by numpy's header reader (which bounds the header's size)."""
    try:
        version = np.lib.format.read_magic(io.BytesIO(head + stream.read(4)))
        if version not in _NPY_HEADERS:
            raise ValueError(f"format version {version} is not supported")
        shape, fortran_order, dtype = _NPY_HEADERS[version](stream)
    except ValueError as e:
        raise ImageError(f"{name}: unreadable .npy file ({e})") from e
    if dtype.hasobject:
        raise ImageError(f"{name}: unreadable .npy file (object arrays need pickle, which is refused)")
    return shape, dtype, "F" if fortran_order else "C"


def _idx_shape(stream: _Gunzip | io.BytesIO, head: bytes, name: str) -> tuple[int, ...]:
    """Dimensions from an IDX header: 0x00 0x00 0x08 (unsigned bytes), ndim, then ndim big-endian uint32."""
    ndim = head[3] if len(head) == 4 else 0
    dims = stream.read(4 * ndim)
    if len(head) < 4 or len(dims) < 4 * ndim:
        raise ImageError(f"{name}: truncated IDX header.")
    return struct.unpack(f">{ndim}I", dims)


def _decode_array(raw: bytes, name: str, limits: Limits) -> np.ndarray:
    """IDX or .npy bytes, maybe gzipped -> array; the header is checked before any pixel data is read or inflated."""
    stream = _Gunzip(raw, name, limits.max_inflated_bytes) if raw.startswith(_GZIP) else io.BytesIO(raw)
    head = stream.read(4)
    if head == _NPY[:4]:
        shape, dtype, order = _npy_header(stream, head, name)
    elif head[:3] == _IDX_U8:
        shape, dtype, order = _idx_shape(stream, head, name), np.dtype(np.uint8), "C"
    else:
        raise ImageError(f"{name}: not a PNG/JPEG (or other image), IDX or .npy file")
    check_batch(shape, name, limits.max_images)
    _check_numbers(dtype, name)
    size = math.prod(shape) * dtype.itemsize
    data = stream.read(size)
    if len(data) != size or stream.read(1):
        held = "less" if len(data) < size else "more"
        raise ImageError(f"{name}: shape {list(shape)} needs {size} bytes of pixel data, the file holds {held}")
    return np.frombuffer(data, dtype).reshape(shape, order=order)


def _picture(raw: bytes, name: str, max_pixels: int) -> np.ndarray:
    """A picture Pillow reads -> greyscale uint8; its size, from the header, is checked before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(raw)) as image:  # parses the header; `load` decodes
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"{name}: {width}x{height} image is over the limit of {max_pixels} pixels")
            image.load()
            grey = _greyscale(image)
    except TooLarge:
        raise  # a ValueError, but not a corrupt image
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a PNG/JPEG (or other image), IDX or .npy file") from e
    except Image.DecompressionBombError as e:
        raise TooLarge(f"{name}: image too large ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt image data
        raise ImageError(f"{name}: corrupt image ({e})") from e
    if grey.size == 0:
        raise ImageError(f"{name}: image has no pixels")
    return grey


def decode(raw: bytes, name: str = "input", invert: Invert = "auto", limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """File bytes -> uint8 [N, 28, 28]. Images give N=1; IDX (maybe gzipped) and .npy give their batch."""
    if not raw:
        raise ImageError(f"{name}: empty file")
    if raw.startswith((_GZIP, _NPY, _IDX_U8)):
        return from_array(_decode_array(raw, name, limits), invert, name)
    return prepare(_picture(raw, name, limits.max_pixels), invert)[None]


def load(path: str | Path, invert: Invert = "auto") -> np.ndarray:
    """Read and decode one file (see `decode`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from e
    return decode(raw, str(path), invert)
