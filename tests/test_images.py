"""Picture conversion: base64, bytes -> PIL -> IMAGE/MASK tensors, and tensors -> upload bytes."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zimage_api import images
from zimage_api.errors import ImageDecodeError, ValidationError
from zimage_api.images import (
    DEFAULT_MAX_PIXELS,
    b64_to_tensor,
    bytes_to_tensor,
    decode_base64,
    image_to_array,
    open_image,
    prepare_upload,
    tensor_to_pil,
    tensor_to_upload,
    validate_image_tensor,
)

REPO = Path(__file__).resolve().parents[1]


def encode(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that only claims a size: signature, IHDR and IEND, no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------------------------
# base64
# --------------------------------------------------------------------------------------------------------------

# 0xfb 0xff 0xbf encodes to "+/+/" in standard base64 and "-_-_" in the urlsafe alphabet; 7 bytes need padding.
PAYLOAD = b"\xfb\xff\xbf\xfb\xff\xbfZ"
STANDARD = base64.b64encode(PAYLOAD).decode()  # "+/+/+/+/Wg=="
assert "+" in STANDARD and "/" in STANDARD and STANDARD.endswith("==")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(STANDARD, id="bare"),
        pytest.param("data:image/png;base64," + STANDARD, id="data-url"),
        pytest.param("DATA:image/PNG;BASE64," + STANDARD, id="data-url-upper-case"),
        pytest.param(f"  {STANDARD[:4]}\n{STANDARD[4:8]}\r\n\t{STANDARD[8:]} \n", id="whitespace-and-newlines"),
        pytest.param(base64.urlsafe_b64encode(PAYLOAD).decode(), id="urlsafe"),
        pytest.param(STANDARD.rstrip("="), id="missing-padding"),
        pytest.param("data:image/png;base64," + base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("="),
                     id="data-url-urlsafe-unpadded"),
    ],
)
def test_decode_base64_accepts_what_providers_send(text: str) -> None:
    assert decode_base64(text) == PAYLOAD


SECRET_LOOKING = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 20


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("not*base64!" + SECRET_LOOKING, "not base64", id="bad-characters"),
        pytest.param("QUJDR", "cut off", id="impossible-length"),
        pytest.param("", "empty", id="empty"),
        pytest.param("   \n ", "empty", id="only-whitespace"),
        pytest.param("data:image/png," + SECRET_LOOKING, "without base64", id="data-url-not-base64"),
        pytest.param("https://cdn.example.com/out/" + SECRET_LOOKING + ".png", "URL", id="url"),
        pytest.param("QUJD\u00e9" + SECRET_LOOKING, "not base64", id="non-ascii"),
    ],
)
def test_decode_base64_rejects_invalid_data_without_quoting_it(text: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_base64(text)
    message = str(info.value)
    assert message.startswith(f"The provider returned invalid base64 image data ({len(text)} characters)")
    assert reason in message
    assert SECRET_LOOKING[:12] not in message and len(message) < 200


def test_b64_to_tensor_decodes_data_urls_and_bare_strings() -> None:
    red = encode(Image.new("RGB", (4, 2), (255, 0, 0)))
    items = ["data:image/png;base64," + base64.b64encode(red).decode(), base64.urlsafe_b64encode(red).decode()]
    image, mask = b64_to_tensor(items)
    assert image.shape == (2, 2, 4, 3) and mask is None
    assert torch.equal(image[..., 0], torch.ones(2, 2, 4)) and image[..., 1:].abs().max() == 0


def test_error_for_valid_base64_of_a_web_page_does_not_contain_the_base64() -> None:
    page = base64.b64encode(b"<!DOCTYPE html><html><body>Sign in</body></html>" * 10).decode()
    with pytest.raises(ImageDecodeError) as info:
        b64_to_tensor([page])
    assert "HTML page" in str(info.value) and page[:16] not in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# modes
# --------------------------------------------------------------------------------------------------------------


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    img.info["transparency"] = 0
    return img


def _sixteen_bit(values: list[int], dtype: str) -> Image.Image:
    return Image.fromarray(np.array([values], dtype=dtype))


MODE_CASES = [
    # (id, picture, expected rgb row, expected alpha row or None)
    ("RGB", Image.frombytes("RGB", (2, 1), bytes([1, 2, 3, 250, 251, 252])), [[1, 2, 3], [250, 251, 252]], None),
    ("RGBA", Image.frombytes("RGBA", (3, 1), bytes([10, 20, 30, 0, 40, 50, 60, 255, 1, 2, 3, 128])),
     [[10, 20, 30], [40, 50, 60], [1, 2, 3]], [0, 255, 128]),
    ("LA", Image.frombytes("LA", (2, 1), bytes([100, 50, 7, 255])), [[100] * 3, [7] * 3], [50, 255]),
    ("P-transparency", _palette_with_transparency(), [[0, 0, 0], [10, 20, 30], [200, 100, 50]], [0, 255, 255]),
    ("L", Image.frombytes("L", (2, 1), bytes([7, 255])), [[7] * 3, [255] * 3], None),
    ("1-bit", Image.frombytes("1", (8, 1), bytes([0b10100000])), [[255] * 3, [0] * 3, [255] * 3] + [[0] * 3] * 5,
     None),
    ("I;16", _sixteen_bit([0, 32768, 65535, 257], "<u2"), [[0] * 3, [128] * 3, [255] * 3, [1] * 3], None),
    ("I;16B", _sixteen_bit([0, 32768, 65535, 257], ">u2"), [[0] * 3, [128] * 3, [255] * 3, [1] * 3], None),
    ("I", _sixteen_bit([-5, 32768, 65535, 70000], "<i4"), [[0] * 3, [128] * 3, [255] * 3, [255] * 3], None),
    ("F", Image.fromarray(np.array([[0.0, 127.6, 300.0, -2.0]], dtype=np.float32)),
     [[0] * 3, [128] * 3, [255] * 3, [0] * 3], None),
]


@pytest.mark.parametrize(("picture", "rgb", "alpha"), [case[1:] for case in MODE_CASES],
                         ids=[case[0] for case in MODE_CASES])
def test_image_to_array_handles_every_mode(picture: Image.Image, rgb: list, alpha: list | None) -> None:
    got_rgb, got_alpha = image_to_array(picture)
    assert got_rgb.dtype == np.uint8 and got_rgb.shape == (1, len(rgb), 3)
    assert got_rgb[0].tolist() == rgb
    if alpha is None:
        assert got_alpha is None
    else:
        assert got_alpha.dtype == np.float32 and got_alpha.shape == (1, len(alpha))
        assert np.allclose(got_alpha[0], np.array(alpha) / 255.0)


def test_sixteen_bit_png_scales_to_the_full_range() -> None:
    blob = encode(_sixteen_bit([0, 32768, 65535], "<u2"))
    assert Image.open(io.BytesIO(blob)).mode.startswith("I")
    image, mask = bytes_to_tensor([blob])
    assert mask is None
    assert image[0, 0, :, 0].tolist() == pytest.approx([0.0, 0.5, 1.0], abs=0.5 / 255 + 1e-6)
    assert image[0, 0, 2].tolist() == [1.0, 1.0, 1.0]


def test_cmyk_jpeg_comes_back_as_rgb() -> None:
    blob = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    image, mask = bytes_to_tensor([blob])
    assert image.shape == (1, 16, 16, 3) and mask is None
    red, green, blue = image[0].mean(dim=(0, 1)).tolist()
    assert red > 0.9 and green < 0.1 and blue < 0.1


def test_rgb_png_with_a_transparent_colour_key_gets_a_mask() -> None:
    img = Image.frombytes("RGB", (2, 1), bytes([1, 2, 3, 9, 9, 9]))
    _, mask = bytes_to_tensor([encode(img, transparency=(1, 2, 3))])
    assert mask.tolist() == [[[1.0, 0.0]]]


# --------------------------------------------------------------------------------------------------------------
# MASK convention and batches
# --------------------------------------------------------------------------------------------------------------


def test_rgba_mask_follows_load_image_convention_one_minus_alpha() -> None:
    blob = encode(Image.frombytes("RGBA", (3, 1), bytes([10, 20, 30, 0, 40, 50, 60, 255, 1, 2, 3, 128])))
    image, mask = bytes_to_tensor([blob])
    assert image.shape == (1, 1, 3, 3) and image.dtype == torch.float32 and image.is_contiguous()
    assert torch.equal(image[0, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert mask.shape == (1, 1, 3) and mask.dtype == torch.float32
    # transparent -> 1, opaque -> 0, half -> 1 - 128/255
    assert mask[0, 0].tolist() == pytest.approx([1.0, 0.0, 1.0 - 128 / 255])


def test_batch_stacks_pictures_and_gives_opaque_ones_an_empty_mask() -> None:
    opaque = encode(Image.new("RGB", (5, 4), (255, 0, 0)))
    clear = encode(Image.new("RGBA", (5, 4), (0, 0, 255, 0)))
    grey = encode(Image.new("L", (5, 4), 51))
    image, mask = bytes_to_tensor([opaque, clear, grey])
    assert image.shape == (3, 4, 5, 3) and image.is_contiguous()
    assert image[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert image[1, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert image[2, 0, 0].tolist() == pytest.approx([0.2] * 3)
    assert mask.shape == (3, 4, 5)
    assert mask[0].max() == 0 and mask[1].min() == 1 and mask[2].max() == 0


def test_batch_without_transparency_has_no_mask() -> None:
    blobs = [encode(noise(6, 3, seed=seed)) for seed in range(3)]
    image, mask = bytes_to_tensor(blobs)
    assert mask is None
    for index, blob in enumerate(blobs):
        expected = np.asarray(Image.open(io.BytesIO(blob))).astype(np.float32) / 255
        assert np.array_equal(image[index].numpy(), expected)


def test_batch_of_different_sizes_is_rejected_not_resized() -> None:
    blobs = [encode(Image.new("RGB", (32, 32))), encode(Image.new("RGB", (32, 32))), encode(Image.new("RGB", (24, 32)))]
    with pytest.raises(ValidationError) as info:
        bytes_to_tensor(blobs)
    assert str(info.value) == (
        "The provider returned pictures of different sizes: 32x32 and 24x32; a batch needs one size."
    )


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValidationError, match="returned no pictures"):
        bytes_to_tensor([])


def test_decoding_read_only_pixels_raises_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bytes_to_tensor([encode(noise(8, 8))])
        bytes_to_tensor([encode(noise(8, 8, "RGBA"))])


# --------------------------------------------------------------------------------------------------------------
# open_image: orientation, non-pictures, truncation, bombs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    stored = Image.new("RGB", (20, 10), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 4, 4))  # red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    blob = encode(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))

    picture = open_image(blob)
    assert picture.size == (10, 20)
    image, _ = bytes_to_tensor([blob])
    assert image.shape == (1, 20, 10, 3)
    # a viewer shows the mark in the top-right corner
    assert image[0, 1, 8].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.1)
    assert image[0, 1, 1].max() < 0.1 and image[0, 18, 8].max() < 0.1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", "got nothing (0 bytes, empty)", id="empty"),
        pytest.param(b" \r\n", "only whitespace", id="whitespace"),
        pytest.param(b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>", "an HTML page",
                     id="html"),
        pytest.param(b"\xef\xbb\xbf  <html><body>Login</body></html>", "an HTML page", id="html-bom"),
        pytest.param(b'{"error": {"message": "Insufficient balance", "code": 402}}',
                     "JSON (59 bytes): Insufficient balance", id="json-error"),
        pytest.param(b'[1, 2, 3]', "JSON (9 bytes)", id="json-list"),
        pytest.param(b'<?xml version="1.0"?><svg></svg>', "SVG/XML", id="svg"),
        pytest.param(b"iVBORw0KGgoAAAANSUhEUgAA", "base64 text that was not decoded", id="undecoded-base64"),
        pytest.param(b"\x00\x01\x02garbage" * 10, "not a readable picture", id="garbage"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a readable picture", id="eps"),
    ],
)
def test_non_pictures_say_what_they_look_like_and_name_the_source(data: bytes, expected: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        open_image(data, source="the result URL")
    message = str(info.value)
    assert message.startswith("Expected a picture from the result URL but got ")
    assert expected in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_picture_is_an_error(fmt: str) -> None:
    blob = encode(noise(64, 64), fmt)
    with pytest.raises(ImageDecodeError) as info:
        open_image(blob[: len(blob) // 2])
    assert "truncated or damaged" in str(info.value) and "the provider" in str(info.value)


def test_header_claiming_20000x20000_is_refused_naming_the_cap() -> None:
    with pytest.raises(ImageDecodeError) as info:
        bytes_to_tensor([png_header_only(20000, 20000)])
    assert str(info.value) == (
        "The picture from the provider is 20000x20000 pixels (400,000,000), more than the limit of "
        "16,777,216 pixels (4096x4096); ask for a smaller size."
    )


def test_size_is_checked_from_the_header_even_when_pillow_has_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageDecodeError, match=r"20000x20000 pixels .* limit of 16,777,216 pixels"):
        open_image(png_header_only(20000, 20000))
    with pytest.raises(ImageDecodeError, match=r"5000x4000 pixels \(20,000,000\)"):
        open_image(png_header_only(5000, 4000))


def test_lowered_cap_refuses_a_real_picture_before_decoding_it() -> None:
    blob = encode(noise(64, 64))
    truncated = blob[: len(blob) // 2]  # would be a truncation error if the pixels were decoded
    with pytest.raises(ImageDecodeError) as info:
        open_image(truncated, max_pixels=1000)
    assert str(info.value) == (
        "The picture from the provider is 64x64 pixels (4,096), more than the limit of 1,000 pixels; "
        "ask for a smaller size."
    )
    assert open_image(blob, max_pixels=64 * 64).size == (64, 64)
    assert DEFAULT_MAX_PIXELS == 4096 * 4096


def test_import_does_not_need_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from zimage_api.images import decode_base64, open_image\n"
            "print(decode_base64('aGk='))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'hi'"


# --------------------------------------------------------------------------------------------------------------
# tensors -> PIL -> upload
# --------------------------------------------------------------------------------------------------------------


def test_round_trip_tensor_upload_tensor_is_exact_for_8_bit_values() -> None:
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8))
    image = pixels.float() / 255
    data, filename, content_type = tensor_to_upload(image, 1)
    assert (filename, content_type) == ("reference.png", "image/png")
    back, mask = bytes_to_tensor([data])
    assert mask is None and torch.equal(back[0], image[1])


def test_round_trip_of_arbitrary_floats_is_within_half_a_level() -> None:
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    back, _ = bytes_to_tensor([tensor_to_upload(image)[0]])
    assert (back - image).abs().max() <= 0.5 / 255 + 1e-6


def test_round_trip_keeps_alpha_of_a_four_channel_tensor() -> None:
    image = torch.zeros(1, 2, 2, 4)
    image[..., 0] = 1.0
    image[0, 0, 0, 3] = 1.0  # one opaque pixel, the rest transparent
    picture = tensor_to_pil(image)
    assert picture.mode == "RGBA"
    back, mask = bytes_to_tensor([tensor_to_upload(image)[0]])
    assert torch.equal(back[0], image[0, ..., :3])
    assert mask[0].tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_tensor_to_pil_clamps_and_rounds() -> None:
    image = torch.tensor([[[[-0.5, 0.5, 1.7], [0.002, 0.998, 0.5 / 255]]]])
    assert np.asarray(tensor_to_pil(image)).tolist() == [[[0, 128, 255], [1, 254, 0]]]
    assert tensor_to_pil(image[0]).size == (2, 1)


def test_tensor_to_pil_accepts_half_precision_and_tensors_with_grad() -> None:
    base = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    strided = torch.cat([base, base], dim=2)[:, :, ::2]
    for image in (base.half(), base.bfloat16(), base.clone().requires_grad_(), strided):
        assert np.asarray(tensor_to_pil(image)).reshape(-1).tolist() == [0, 128, 255]
    broken = base.bfloat16().clone()
    broken[0, 0, 0, 1] = float("nan")
    with pytest.raises(ValidationError, match="NaN"):
        validate_image_tensor(broken)


def test_tensor_to_pil_converts_a_large_picture_in_blocks() -> None:
    image = torch.rand(1, 300, 1000, 3, generator=torch.Generator().manual_seed(3))
    expected = image[0].clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(tensor_to_pil(image)), expected)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        pytest.param((3000, 1500), 1024, (1024, 512), id="landscape"),
        pytest.param((1500, 3000), 1024, (512, 1024), id="portrait"),
        pytest.param((1025, 1025), 1024, (1024, 1024), id="just-over"),
        pytest.param((300, 200), 1024, (300, 200), id="small-never-upscaled"),
        pytest.param((1024, 10), 1024, (1024, 10), id="exactly-max-side"),
        pytest.param((4000, 3), 512, (512, 1), id="thin-keeps-one-pixel"),
        pytest.param((8000, 6000), 1024, (1024, 768), id="huge-is-downscaled-not-rejected"),
    ],
)
def test_prepare_upload_fits_the_long_side(size: tuple[int, int], max_side: int,
                                           expected: tuple[int, int]) -> None:
    mode = "L" if size == (8000, 6000) else "RGB"
    data, filename, content_type = prepare_upload(Image.new(mode, size, 90), max_side=max_side)
    assert (filename, content_type) == ("reference.png", "image/png")
    assert Image.open(io.BytesIO(data)).size == expected


def test_tensor_to_upload_downscales() -> None:
    data, _, _ = tensor_to_upload(torch.full((1, 150, 300, 3), 0.5), max_side=100)
    assert Image.open(io.BytesIO(data)).size == (100, 50)


def test_prepare_upload_jpeg_is_rgb_with_transparency_on_white() -> None:
    picture = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    data, filename, content_type = prepare_upload(picture, fmt="jpeg", quality=90)
    assert (filename, content_type) == ("reference.jpg", "image/jpeg")
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.mode == "RGB"
    assert min(decoded.getpixel((4, 4))) > 250


def test_prepare_upload_webp_and_unknown_format() -> None:
    data, filename, content_type = prepare_upload(Image.new("RGB", (8, 8)), fmt="webp")
    assert (filename, content_type) == ("reference.webp", "image/webp")
    assert Image.open(io.BytesIO(data)).format == "WEBP"
    with pytest.raises(ValidationError) as info:
        prepare_upload(Image.new("RGB", (8, 8)), fmt="gif")
    assert info.value.field == "fmt" and "use png, jpeg or webp" in str(info.value)


@pytest.mark.parametrize("mode", ["P", "I;16", "CMYK", "1"])
def test_prepare_upload_accepts_any_mode(mode: str) -> None:
    picture = Image.new(mode, (2000, 1000))
    data, _, _ = prepare_upload(picture, max_side=500)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.size == (500, 250) and decoded.mode in ("RGB", "RGBA")


def test_prepare_upload_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.open(io.BytesIO(encode(Image.new("RGB", (40, 20)), "PNG", exif=exif)))
    data, _, _ = prepare_upload(stored)
    assert Image.open(io.BytesIO(data)).size == (20, 40)


# --------------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------------

NAN_PICTURE = torch.zeros(1, 4, 4, 3)
NAN_PICTURE[0, 2, 1, 0] = float("nan")
INF_PICTURE = torch.zeros(4, 4, 3)
INF_PICTURE[3, 3, 2] = float("inf")

INVALID_TENSORS = [
    ("channels-first", torch.zeros(1, 3, 512, 512),
     "The image input has shape [1, 3, 512, 512]; expected [batch, height, width, 3] (channels last)."),
    ("rank-2", torch.zeros(8, 8),
     "The image input has shape [8, 8]; expected [batch, height, width, 3] (channels last)."),
    ("rank-5", torch.zeros(1, 1, 2, 2, 3),
     "The image input has shape [1, 1, 2, 2, 3]; expected [batch, height, width, 3] (channels last)."),
    ("two-channels", torch.zeros(1, 8, 8, 2),
     "The image input has shape [1, 8, 8, 2]; expected [batch, height, width, 3] (channels last)."),
    ("empty", torch.zeros(0, 8, 8, 3),
     "The image input is empty (shape [0, 8, 8, 3]); connect a node that produces a picture."),
    ("integers", torch.zeros(1, 2, 2, 3, dtype=torch.uint8),
     "The image input has type uint8; expected float values in 0..1."),
    ("nan", NAN_PICTURE, "The image input contains NaN or infinite values; check the node that produced it."),
    ("inf", INF_PICTURE, "The image input contains NaN or infinite values; check the node that produced it."),
    ("not-a-tensor", np.zeros((1, 2, 2, 3), dtype=np.float32),
     "The image input is a ndarray; expected a tensor [batch, height, width, 3]."),
]


@pytest.mark.parametrize(("image", "message"), [case[1:] for case in INVALID_TENSORS],
                         ids=[case[0] for case in INVALID_TENSORS])
@pytest.mark.parametrize("check", [validate_image_tensor, tensor_to_pil, tensor_to_upload])
def test_invalid_image_inputs_are_explained(check, image, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check(image)
    assert str(info.value) == message
    assert info.value.field == "image"


def test_valid_inputs_pass_validation() -> None:
    validate_image_tensor(torch.rand(2, 4, 4, 3))
    validate_image_tensor(torch.full((4, 4, 4), 2.0))  # out of range is clamped later, not an error
    validate_image_tensor(torch.zeros(1, 4, 4, 3, dtype=torch.float16))


def test_only_the_chosen_picture_is_checked_for_nan() -> None:
    batch = torch.zeros(2, 4, 4, 3)
    batch[1, 0, 0, 0] = float("nan")
    assert tensor_to_pil(batch, 0).size == (4, 4)
    with pytest.raises(ValidationError, match="NaN"):
        tensor_to_pil(batch, 1)
    with pytest.raises(ValidationError, match="NaN"):
        validate_image_tensor(batch)


def test_picture_index_outside_the_batch() -> None:
    batch = torch.zeros(2, 4, 4, 3)
    assert tensor_to_pil(batch, -1).size == (4, 4)
    with pytest.raises(ValidationError) as info:
        tensor_to_pil(batch, 2)
    assert str(info.value) == "The image input has 2 pictures; picture 2 does not exist."


def test_module_exports() -> None:
    assert set(images.__all__) >= {
        "decode_base64", "open_image", "image_to_array", "bytes_to_tensor", "b64_to_tensor", "tensor_to_pil",
        "validate_image_tensor", "prepare_upload", "tensor_to_upload", "DEFAULT_MAX_PIXELS",
    }
