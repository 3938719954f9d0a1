"""File decoding: every supported format lands in Fashion-MNIST's convention, bad files are clear errors."""

import gzip
import io

import numpy as np
import pytest
from PIL import Image

from conftest import make_images
from deploy_helpers import idx_header, npy_header, png_header
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


def test_npy_versions_orders_and_gzip_members(batch):
    """The header-first reader takes what np.save writes: format 1.0 and 2.0, C and Fortran order, any gzip members."""
    for version in ((1, 0), (2, 0)):
        for array in (batch, np.asfortranarray(batch)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, version=version)
            np.testing.assert_array_equal(images.decode(buf.getvalue()), batch)
    raw = data.to_idx(batch)
    np.testing.assert_array_equal(images.decode(gzip.compress(raw[:100]) + gzip.compress(raw[100:])), batch)


def test_gzip_is_inflated_no_further_than_the_cap():
    bomb = gzip.compress(npy_header((50, 28, 28)) + bytes(4 * 1024 * 1024))  # a valid header, then 4 MiB in ~4 KB
    with pytest.raises(images.TooLarge, match="^bomb: gzip data inflates to more than 10000 bytes$"):
        images.decode(bomb, "bomb", limits=images.Limits(max_inflated_bytes=10_000))


@pytest.mark.parametrize("header", [npy_header((10**6, 28, 28)), idx_header((10**6, 28, 28))])
@pytest.mark.parametrize("pack", [bytes, gzip.compress])
def test_a_header_claiming_too_many_images_is_refused_before_the_data(header, pack):
    """The file holds no pixels at all: only a check of the header's count can say 'too many'."""
    with pytest.raises(images.TooLarge, match="^huge: 1000000 images are over the limit of 1000$"):
        images.decode(pack(header), "huge", limits=images.Limits(max_images=1000))


def test_a_header_with_a_wrong_shape_is_refused_as_undecodable():
    with pytest.raises(images.ImageError, match=r"got \[1000000, 32, 32\]") as error:
        images.decode(npy_header((10**6, 32, 32)), "odd")
    assert not isinstance(error.value, images.TooLarge)


def test_picture_size_is_checked_from_the_header():
    limits = images.Limits(max_pixels=10_000)
    with pytest.raises(images.TooLarge, match="^big: 5000x5000 image is over the limit of 10000 pixels$"):
        images.decode(png_header(5000, 5000), "big", limits=limits)  # a header only: decoding would fail otherwise
    with pytest.raises(images.TooLarge, match="image too large"):  # past twice Pillow's limit: its own check
        images.decode(png_header(20000, 20000), "huge")
    assert images.decode(png(np.zeros((100, 100), np.uint8)), limits=limits).shape == (1, 28, 28)
    with pytest.raises(images.TooLarge, match="100x101 image"):
        images.decode(png(np.zeros((101, 100), np.uint8)), limits=limits)


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
        (
            npy_header((3, 28, 28)) + bytes(784),
            r"shape \[3, 28, 28\] needs 2352 bytes of pixel data, the file holds less",
        ),
        (data.to_idx(make_images(np.arange(2), seed=0)) + b"\0", "needs 1568 bytes of pixel data, the file holds more"),
        (npy_header((1, 28, 28), "<V0"), "expected numbers"),
        (b"\x93NUMPY\x09\x00" + bytes(100), "unreadable .npy file .*version"),
    ],
)
def test_bad_input_is_a_clear_error(raw, message):
    with pytest.raises(images.ImageError, match=message):
        images.decode(raw, "upload")


def test_invert_policy_is_checked():
    with pytest.raises(ValueError, match="invert must be one of"):
        images.should_invert(np.zeros((28, 28), np.uint8), "maybe")
