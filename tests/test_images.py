"""File decoding: every supported format lands in Fashion-MNIST's convention, bad files are clear errors."""

import gzip
import io

import numpy as np
import pytest
from PIL import Image

from conftest import make_images
from fmnist_jax import data, images


@pytest.fixture(scope="module")
def batch():
    """Fashion-MNIST-like images (dark noisy border, light centre) and one light item with exact zero border."""
    x = make_images(np.arange(4) % 10, seed=3)
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 9:19] = 200
    return np.concatenate([x, item[None]])


def png(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_28x28_png_round_trips_exactly(batch):
    for x in batch:
        np.testing.assert_array_equal(images.decode(png(x)), x[None])


def test_dark_on_light_is_inverted_by_auto_only(batch):
    x = batch[-1]
    negative = png(255 - x)
    np.testing.assert_array_equal(images.decode(negative, invert="auto")[0], x)
    np.testing.assert_array_equal(images.decode(negative, invert="no")[0], 255 - x)
    np.testing.assert_array_equal(images.decode(png(x), invert="yes")[0], 255 - x)


def test_large_rgb_photo_is_trimmed_scaled_and_centred():
    photo = np.full((300, 500, 3), 255, np.uint8)  # white page, dark item 100 tall x 50 wide at an off-centre spot
    photo[40:140, 300:350] = (20, 30, 40)
    for fmt in ("PNG", "JPEG"):
        out = images.decode(png(photo, fmt=fmt))
        assert out.shape == (1, 28, 28) and out.dtype == np.uint8
        rows, cols = np.nonzero(out[0] > 128)
        assert rows.min() == 0 and rows.max() == 27  # longest edge fills the frame
        assert (cols.min(), cols.max()) == (7, 20)  # aspect kept (14 wide), centred
        assert out[0, :, :5].max() < 40  # background became black


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "CMYK"])
def test_any_mode_decodes(batch, mode):
    x = batch[-1]
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = images.decode(png(x, mode, fmt))
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    if mode in ("L", "RGB", "RGBA", "LA", "P", "I;16"):
        np.testing.assert_array_equal(out[0], x)


def test_transparent_background_counts_as_white():
    rgba = np.zeros((40, 40, 4), np.uint8)  # transparent everywhere except an opaque black bar
    rgba[10:30, 15:25] = (0, 0, 0, 255)
    out = images.decode(png(rgba))[0]
    assert out[0, 0] == 0 and out[14, 14] == 255  # flattened on white, then auto-inverted


def test_idx_gzip_and_npy_batches(batch):
    idx = data.to_idx(batch)
    for raw in (idx, gzip.compress(idx)):
        np.testing.assert_array_equal(images.decode(raw), batch)
    for array in (batch, batch[..., None], batch.astype(np.float32) / 255, batch[0]):
        buf = io.BytesIO()
        np.save(buf, array)
        out = images.decode(buf.getvalue(), "x.npy")
        np.testing.assert_array_equal(out, batch if array.ndim != 2 else batch[:1])


def test_load_reads_files(tmp_path, batch):
    (tmp_path / "a.png").write_bytes(png(batch[0]))
    np.testing.assert_array_equal(images.load(tmp_path / "a.png"), batch[:1])
    with pytest.raises(images.ImageError, match="cannot be read"):
        images.load(tmp_path / "missing.png")


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty file"),
        (b"hello, I am text", "not a PNG/JPEG"),
        (png(make_images(np.arange(1), seed=0)[0])[:300], "corrupt image"),
        (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5), "truncated IDX header"),
        (b"\x1f\x8b broken gzip", "corrupt gzip"),
        (_npy(np.zeros((3, 32, 32), np.uint8)), r"expected shape \[N, 28, 28\]"),
        (_npy(np.full((28, 28), 2.0)), r"float pixels must lie in \[0, 1\]"),
        (_npy(np.full((28, 28), 300)), "integer pixels must lie in 0..255"),
        (_npy(np.full((28, 28), np.nan)), "NaN"),
        (_npy(np.array([{"a": 1}], dtype=object)), "unreadable .npy"),
    ],
)
def test_bad_input_is_a_clear_error(raw, message):
    with pytest.raises(images.ImageError, match=message):
        images.decode(raw, "upload")


def test_invert_policy_is_checked():
    with pytest.raises(ValueError, match="invert must be one of"):
        images.should_invert(np.zeros((28, 28), np.uint8), "maybe")
