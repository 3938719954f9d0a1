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
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 28
INVERT_CHOICES = ("auto", "yes", "no")
Invert = Literal["auto", "yes", "no"]
_BORDER = 2
_TRIM_THRESHOLD = 16  # grey levels from the background that still count as background
Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs with a clear error


class ImageError(ValueError):
    """A file or array that cannot be made into 28x28 greyscale images; the message says why."""


def _border_mean(image: np.ndarray) -> float:
    b = min(_BORDER, max(1, min(image.shape) // 4))
    frame = np.concatenate([image[:b].ravel(), image[-b:].ravel(), image[:, :b].ravel(), image[:, -b:].ravel()])
    return float(frame.mean())


def should_invert(image: np.ndarray, invert: Invert) -> bool:
    """The inversion policy for one greyscale uint8 image (see module docstring)."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    return invert == "yes" or (invert == "auto" and _border_mean(image) > 127.5)


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


def as_uint8(array: np.ndarray, name: str = "array") -> np.ndarray:
    """An array batch -> uint8 [N, 28, 28]: integers 0..255 as they are, floats in [0, 1] scaled by 255."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (SIZE, SIZE):
        raise ImageError(f"{name}: expected shape [N, 28, 28] (or [28, 28], [N, 28, 28, 1]), got {list(a.shape)}")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageError(f"{name}: expected numbers, got dtype {a.dtype}")
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


def _decode_array(raw: bytes, name: str) -> np.ndarray:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ImageError(f"{name}: corrupt gzip data ({e})") from e
    if raw.startswith(b"\x93NUMPY"):
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ImageError(f"{name}: unreadable .npy file ({e})") from e
    if raw[:3] == b"\x00\x00\x08":
        from fmnist_jax.data import DataError, parse_idx  # lazy: only IDX needs the data module

        try:
            return parse_idx(raw, name)
        except DataError as e:
            raise ImageError(str(e)) from e
    raise ImageError(f"{name}: not a PNG/JPEG (or other image), IDX or .npy file")


def decode(raw: bytes, name: str = "input", invert: Invert = "auto") -> np.ndarray:
    """File bytes -> uint8 [N, 28, 28]. Images give N=1; IDX (maybe gzipped) and .npy give their batch."""
    if not raw:
        raise ImageError(f"{name}: empty file")
    if raw[:2] == b"\x1f\x8b" or raw.startswith(b"\x93NUMPY") or raw[:3] == b"\x00\x00\x08":
        return from_array(_decode_array(raw, name), invert, name)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            grey = _greyscale(image)
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a PNG/JPEG (or other image), IDX or .npy file") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt image data
        raise ImageError(f"{name}: corrupt image ({e})") from e
    if grey.size == 0:
        raise ImageError(f"{name}: image has no pixels")
    return prepare(grey, invert)[None]


def load(path: str | Path, invert: Invert = "auto") -> np.ndarray:
    """Read and decode one file (see `decode`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from e
    return decode(raw, str(path), invert)
