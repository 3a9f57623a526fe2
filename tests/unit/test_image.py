"""Decoding, raw-frame validation, letterbox geometry and its inverse mapping."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omniface import contract
from omniface.errors import InvalidInput
from omniface.processing import image


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _gradient(height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)], -1).astype(np.uint8)


# ---------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt,tolerance", [("PNG", 0), ("BMP", 0), ("WEBP", 0), ("JPEG", 12)])
def test_decode_formats(fmt: str, tolerance: int) -> None:
    frame = _gradient()
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    out = image.decode_image(_encode(Image.fromarray(frame), fmt, **kwargs))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - frame).mean() <= tolerance


def test_decode_grayscale_png_replicates() -> None:
    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    out = image.decode_image(_encode(Image.fromarray(gray.astype(np.uint8), "L"), "PNG"))
    assert out.shape == (48, 64, 3)
    assert (out == gray[:, :, None]).all()


def test_decode_16bit_png_rescales() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    out = image.decode_image(_encode(Image.fromarray(values), "PNG"))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_decode_rgba_composited_on_black() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent: black, whatever the colour underneath
    rgba[0, 2, 3] = 128  # half
    out = image.decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [200, 200, 200]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert abs(int(out[0, 2, 0]) - 100) <= 1


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_decode_palette(fmt: str) -> None:
    pal = Image.new("P", (5, 3))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putpixel((1, 0), 1)
    pal.putpixel((2, 2), 2)
    out = image.decode_image(_encode(pal, fmt))
    assert out.shape == (3, 5, 3)
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[2, 2].tolist() == [0, 255, 0]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_decode_applies_exif_orientation() -> None:
    frame = np.zeros((10, 20, 3), np.uint8)
    frame[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    out = image.decode_image(_encode(Image.fromarray(frame), "PNG", exif=exif))
    assert out.shape == (20, 10, 3)
    assert out[0, -1].tolist() == [255, 255, 255]  # top-left moved to top-right


# EXIF orientation -> how the stored pixels map to the upright frame (PIL transposes).
ORIENTATIONS = {
    1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for ``upright`` under an EXIF orientation (the inverse
    of what a viewer applies; orientations 5 and 7 are their own inverse, 6 and 8 swap)."""
    inverse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    out = upright
    for op in ORIENTATIONS[inverse]:
        out = out.transpose(op)
    return out


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_frame_applies_and_reports_every_orientation(orientation: int) -> None:
    upright = np.zeros((10, 20, 3), np.uint8)
    upright[0, 0] = (255, 0, 0)  # one marker per corner, each its own colour
    upright[0, -1] = (0, 255, 0)
    upright[-1, 0] = (0, 0, 255)
    exif = Image.Exif()
    exif[image.EXIF_ORIENTATION_TAG] = orientation
    stored = stored_for(Image.fromarray(upright), orientation)
    decoded = image.decode_frame(_encode(stored, "PNG", exif=exif))
    assert decoded.orientation == orientation
    np.testing.assert_array_equal(decoded.pixels, upright)


def test_decode_frame_without_a_tag_or_with_a_bad_one() -> None:
    plain = _encode(Image.fromarray(_gradient()), "PNG")
    assert image.decode_frame(plain).orientation == 1
    exif = Image.Exif()
    exif[image.EXIF_ORIENTATION_TAG] = 9  # not an orientation: ignored, as viewers do
    odd = image.decode_frame(_encode(Image.fromarray(_gradient()), "PNG", exif=exif))
    assert odd.orientation == 1 and odd.pixels.shape == (48, 64, 3)


def test_decode_empty() -> None:
    with pytest.raises(InvalidInput, match="empty image buffer"):
        image.decode_image(b"")


def test_decode_random_bytes() -> None:
    with pytest.raises(InvalidInput, match="not a decodable image"):
        image.decode_image(np.random.default_rng(0).bytes(1000))


def test_decode_truncated_jpeg() -> None:
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(InvalidInput, match="truncated or corrupt JPEG"):
        image.decode_image(data[: len(data) // 2])


def test_decode_truncated_png() -> None:
    noise = np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)
    data = _encode(Image.fromarray(noise), "PNG")
    with pytest.raises(InvalidInput):
        image.decode_image(data[: len(data) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height, with a tiny (invalid) data stream: the size
    check must fire from the header, before any pixel is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decode_too_many_pixels_from_header() -> None:
    with pytest.raises(InvalidInput, match="more than the limit"):
        image.decode_image(_png_header_only(9000, 9000))


def test_decode_decompression_bomb_becomes_invalid_input() -> None:
    # Past Pillow's own bomb limit (2 * 89 MP): Image.open itself refuses.
    with pytest.raises(InvalidInput, match="too many pixels"):
        image.decode_image(_png_header_only(20000, 20000))


def test_decode_too_many_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "MAX_ENCODED_BYTES", 100)
    with pytest.raises(InvalidInput, match="100-byte limit"):
        image.decode_image(b"\0" * 101)


def test_decode_header_size_is_checked_small_frame_ok() -> None:
    out = image.decode_image(_encode(Image.new("RGB", (1, 1), (7, 8, 9)), "PNG"))
    assert out.tolist() == [[[7, 8, 9]]]


# ---------------------------------------------------------------------- as_rgb_frame


def test_as_rgb_frame_rgb_passthrough() -> None:
    frame = _gradient()
    out = image.as_rgb_frame(frame)
    assert out is frame


def test_as_rgb_frame_bgr_flip() -> None:
    frame = _gradient()
    out = image.as_rgb_frame(frame[:, :, ::-1], "BGR")
    assert out.flags.c_contiguous
    assert (out == frame).all()


def test_as_rgb_frame_gray_and_alpha() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (image.as_rgb_frame(gray) == gray[:, :, None]).all()
    assert image.as_rgb_frame(gray[:, :, None]).shape == (3, 4, 3)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 10  # blue
    bgra[..., 2] = 30  # red
    bgra[..., 3] = 255
    assert image.as_rgb_frame(bgra, "BGR")[0, 0].tolist() == [30, 0, 10]
    assert image.as_rgb_frame(bgra, "RGBA")[0, 0].tolist() == [10, 0, 30]


def test_as_rgb_frame_float_rejected() -> None:
    with pytest.raises(InvalidInput, match="uint8") as info:
        image.as_rgb_frame(np.zeros((4, 4, 3), np.float32))
    assert "float32" in str(info.value)


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 3, 1), (12,), (4, 4, 5)])
def test_as_rgb_frame_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"HxWx3.*got shape") as info:
        image.as_rgb_frame(np.zeros(shape, np.uint8))
    assert str(shape) in str(info.value)


def test_as_rgb_frame_zero_size_and_order() -> None:
    with pytest.raises(InvalidInput, match="zero size"):
        image.as_rgb_frame(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(InvalidInput, match="color_order"):
        image.as_rgb_frame(np.zeros((2, 2, 3), np.uint8), "HSV")


def test_as_rgb_frame_too_many_pixels() -> None:
    # A broadcast view: huge shape, no memory.
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (9000, 9000, 3))
    with pytest.raises(InvalidInput, match="more than the limit"):
        image.as_rgb_frame(big)


# ------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("shape", [(1080, 1920), (1920, 1080), (1, 1), (3, 700), (4000, 6000), (480, 640), (100, 90)])
def test_letterbox_round_trip(shape: tuple[int, int]) -> None:
    h, w = shape
    frame = np.broadcast_to(np.full((1, 1, 3), 255, np.uint8), (h, w, 3))
    out, box = image.letterbox(frame, 480, 640)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    assert box.pad_x == int(box.pad_x) and box.pad_y == int(box.pad_y)
    # The pasted content lands where the pads say, and only there.
    new_w, new_h = round(w * box.scale), round(h * box.scale)
    px, py = int(box.pad_x), int(box.pad_y)
    assert (out[py : py + new_h, px : px + new_w] == 255).all()
    assert out.sum() == 255 * 3 * new_w * new_h
    assert px + new_w <= 640 and py + new_h <= 480 and (px == 0 or py == 0)
    # Original -> detector -> original.
    rng = np.random.default_rng(h * 7 + w)
    points = rng.uniform(0, 1, (50, 2)) * [w, h]
    det = points * box.scale + [box.pad_x, box.pad_y]
    assert np.abs(image.unletterbox_points(det, box) - points).max() < 0.5
    # The frame's far corner maps to the pasted content's far corner (within rounding).
    corner = np.array([w, h]) * box.scale + [px, py]
    assert np.abs(corner - [px + new_w, py + new_h]).max() <= 0.5 + 1e-6


def test_letterbox_content_position() -> None:
    # A bright square in a 200x400 frame: scale 1.6 into 480x640 (rows 80..400).
    frame = np.zeros((200, 400, 3), np.uint8)
    frame[50:100, 100:150] = 255
    out, box = image.letterbox(frame, 480, 640)
    assert box.scale == pytest.approx(1.6) and box.pad_x == 0 and box.pad_y == 80
    ys, xs = np.nonzero(out[..., 0] > 127)
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    expected = np.array([125.0, 75.0]) * box.scale + [box.pad_x, box.pad_y]
    assert np.abs(centre - expected).max() < 0.5


@pytest.mark.parametrize(("shape", "det_size", "canvas"), [
    ((480, 640), 640, (480, 640)),     # 4:3 at 640: the training canvas exactly
    ((768, 1024), 640, (480, 640)),
    ((1024, 768), 640, (640, 480)),    # a portrait is as tall as a landscape is wide
    ((512, 512), 640, (640, 640)),     # small frames are upscaled to det_size
    ((683, 1024), 640, (448, 640)),    # 427 rows, padded up to a multiple of 32
    ((683, 1024), 0, (704, 1024)),     # native: own size, padded
    ((3000, 4000), 0, (1440, 1920)),   # native, capped at DETECTOR_MAX_SIDE
    ((1, 1), 0, (32, 32)),             # at least one multiple of 32 per side
    ((100, 5000), 640, (32, 640)),
    ((683, 1024), 1000, (672, 1024)),  # any long side in range, not only multiples of 32
])
def test_fit_detector_canvas(shape: tuple[int, int], det_size: int, canvas: tuple[int, int]) -> None:
    h, w = shape
    out, box = image.fit_detector(np.full((h, w, 3), 200, np.uint8), det_size)
    assert out.shape == (*canvas, 3)
    assert out.shape[0] % contract.DETECTOR_SIZE_MULTIPLE == 0 and out.shape[1] % contract.DETECTOR_SIZE_MULTIPLE == 0
    scale, new_h, new_w, _, _ = image.detector_canvas(h, w, det_size)
    assert box.scale == scale and (out > 0).sum() == new_h * new_w * 3  # the frame, and padding only around it
    px, py = int(box.pad_x), int(box.pad_y)
    assert (out[py:py + new_h, px:px + new_w] == 200).all()
    assert abs(2 * px + new_w - canvas[1]) <= 1 and abs(2 * py + new_h - canvas[0]) <= 1  # centred
    if det_size:
        assert max(new_h, new_w) == min(det_size, contract.DETECTOR_MAX_SIDE)


def test_fit_detector_at_640_is_the_old_letterbox_for_4_3_frames() -> None:
    frame = _gradient(768, 1024)
    fitted, fitted_box = image.fit_detector(frame, 640)
    boxed, letterbox = image.letterbox(frame, contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH)
    np.testing.assert_array_equal(fitted, boxed)
    assert fitted_box == letterbox


@pytest.mark.parametrize(("text", "value"), [("native", 0), ("NATIVE", 0), (" 640 ", 640), (960, 960), (0, 0)])
def test_parse_det_size(text, value: int) -> None:
    assert image.parse_det_size(text) == value


@pytest.mark.parametrize("bad", ["huge", "", 31, 1921, -640, 640.0, True, None])
def test_parse_det_size_refuses(bad) -> None:
    with pytest.raises(InvalidInput, match="det_size"):
        image.parse_det_size(bad)
    if isinstance(bad, int) and not isinstance(bad, bool):
        with pytest.raises(InvalidInput, match="det_size"):
            image.fit_detector(np.zeros((8, 8, 3), np.uint8), bad)


def test_unletterbox_boxes_and_clip() -> None:
    box = image.Letterbox(scale=0.5, pad_x=0.0, pad_y=60.0)
    det = np.array([[10, 70, 20, 80], [-4, 50, 700, 500]], np.float32)
    orig = image.unletterbox_boxes(det, box)
    assert orig.tolist() == [[20, 20, 40, 40], [-8, -20, 1400, 880]]
    assert image.clip_boxes(orig, 720, 1280).tolist() == [[20, 20, 40, 40], [0, 0, 1280, 720]]


def test_cap_source() -> None:
    frame = np.zeros((1000, 3000, 3), np.uint8)
    capped, scale = image.cap_source(frame, 1500)
    assert capped.shape == (500, 1500, 3) and scale == 0.5
    same, one = image.cap_source(frame, 3000)
    assert same is frame and one == 1.0


def test_resize_crop() -> None:
    crop = _gradient(200, 150)
    out = image.resize_crop(crop, 112)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] < 10 and out[-1, -1, 0] > 245
