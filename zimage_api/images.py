"""Picture conversion between provider bytes, PIL images and ComfyUI tensors.

Tensor contract (the one ComfyUI uses everywhere):

* IMAGE is a ``torch.Tensor`` ``[B, H, W, 3]``, float32, values in 0..1, on the CPU, contiguous.
* MASK is a ``torch.Tensor`` ``[B, H, W]``, float32, values in 0..1.  It follows ComfyUI's ``LoadImage``:
  ``mask = 1 - alpha``, so 1.0 marks the *transparent* part of a picture and 0.0 the opaque part.

Decoding is written for throughput: a batch is decoded into one preallocated uint8 array and converted to float
once, with no per-picture float copies.  Pillow and numpy are imported eagerly; torch only inside the functions
that make or read tensors, so this module can be imported (and the byte-level helpers used) without torch; a
tensor conversion without it raises :class:`~zimage_api.errors.MissingPackageError` naming the pip command.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
import stat
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .catalog import picture_extension  # the one sniffer of file types, light enough for the CLI's start
from .errors import ImageDecodeError, ValidationError
from .logs import logger
from .packages import import_torch

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PICTURE_FILE_BYTES",
    "PictureInfo",
    "check_picture",
    "picture_extension",
    "read_picture_file",
    "decode_base64",
    "open_image",
    "image_to_array",
    "bytes_to_tensor",
    "b64_to_tensor",
    "tensor_to_pil",
    "validate_image_tensor",
    "prepare_upload",
    "tensor_to_upload",
    "mask_batch_size",
    "mask_to_pil",
]


DEFAULT_MAX_PIXELS = 4096 * 4096
"""Decompression-bomb guard: the largest width*height accepted from a provider."""

# Raster formats a provider can plausibly return.  Restricting Image.open to these keeps untrusted bytes away
# from plugins that shell out (EPS runs Ghostscript) or parse exotic containers.  HEIF/AVIF count only when a
# plugin for them is installed.
_PROVIDER_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")

# Errors Pillow raises for damaged or truncated data, depending on the format and the stage.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_CONVERT_BLOCK_ELEMENTS = 1 << 16  # float values per block when turning a tensor into 8-bit pixels

# (Pillow format, file extension, content type) per upload format name.
_UPLOAD_FORMATS: dict[str, tuple[str, str, str]] = {
    "png": ("PNG", "png", "image/png"),
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "jpg": ("JPEG", "jpg", "image/jpeg"),
    "webp": ("WEBP", "webp", "image/webp"),
}

_BASE64_SIGNATURES = (b"data:image", b"ivborw0kggo", b"/9j/", b"uklgr", b"r0lgod")


# --------------------------------------------------------------------------------------------------------------
# base64 and bytes -> PIL
# --------------------------------------------------------------------------------------------------------------


def _strict_b64(text: str) -> bytes:
    """Standard base64 decoded strictly: any other character, or misplaced padding, raises ``binascii.Error``."""
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text, strict_mode=True)
    return base64.b64decode(text, validate=True)  # Python 3.10 has no strict mode in binascii


def decode_base64(data: str) -> bytes:
    """Decode base64 picture data as providers send it.

    Accepts a ``data:image/...;base64,`` URL or a bare string; tolerates whitespace and newlines, the urlsafe
    alphabet (``-`` and ``_``) and missing ``=`` padding.

    Raises:
        ImageDecodeError: the text is not valid base64.  The message gives its length, never its content.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("latin-1")
    if not isinstance(data, str):
        raise ImageDecodeError(
            f"The provider returned no base64 image data (got {type(data).__name__}); try the request again."
        )
    length = len(data)
    text = data.strip()
    if text[:5].lower() == "data:":
        comma = text.find(",")
        if comma < 0 or ";base64" not in text[:comma].lower():
            raise _invalid_base64(length, "a data: URL without base64 content")
        text = text[comma + 1 :]
    elif text[:8].lower().startswith(("http://", "https://")):
        raise _invalid_base64(length, "it is a URL, not base64")
    if not text:
        raise _invalid_base64(length, "it is empty")
    try:
        # Fast path: clean standard base64, decoded in C without intermediate copies.
        return _strict_b64(text)
    except (binascii.Error, ValueError):
        pass
    cleaned = "".join(text.split()).translate(_URLSAFE_TO_STANDARD).rstrip("=")
    if not cleaned:
        raise _invalid_base64(length, "it is empty")
    if not _BASE64_ALPHABET.fullmatch(cleaned):
        raise _invalid_base64(length, "it contains characters that are not base64")
    if len(cleaned) % 4 == 1:
        raise _invalid_base64(length, "its length is impossible for base64, it may be cut off")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return _strict_b64(cleaned)
    except (binascii.Error, ValueError) as err:
        raise _invalid_base64(length, "it is not well-formed base64") from err


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/]+")


def _invalid_base64(length: int, reason: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"The provider returned invalid base64 image data ({length} characters): {reason}; "
        "try the request again."
    )


def _open_untrusted(data: bytes, *, max_pixels: int, source: str) -> Image.Image:
    """Pillow's lazy open of untrusted bytes (header only), its failures as :class:`ImageDecodeError`."""
    size = len(data)
    try:
        return Image.open(io.BytesIO(data), formats=_readable_formats())
    except Image.DecompressionBombError as err:
        raise _too_large(source, _header_size(bytes(data[:32])), max_pixels, err) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(
            f"Expected a picture from {source} but got data that is not a readable picture ({size:,} bytes); "
            "try again, or choose PNG or JPEG output."
        ) from err
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(f"The picture from {source} is damaged ({size:,} bytes: {err}); try again.") from err


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, source: str = "the provider") -> Image.Image:
    """Open encoded picture bytes as a fully loaded, upright PIL image.

    The size from the header is checked against ``max_pixels`` before any pixel is decoded.  The EXIF
    orientation is applied, so the result is the picture as a viewer shows it.  Animated formats give their first
    frame.

    Args:
        data: the encoded picture (PNG, JPEG, WebP, GIF, BMP, TIFF; AVIF/HEIF when Pillow can read them).
        max_pixels: the largest ``width * height`` accepted.
        source: where the bytes came from, for the error messages ("the provider", "the reference file x.png").

    Raises:
        ImageDecodeError: the bytes are empty, an HTML page, JSON or other text, not a picture, truncated or
            damaged, or larger than ``max_pixels``.  The message names ``source`` and never quotes the bytes.
    """
    view = memoryview(data)
    size = view.nbytes
    if size == 0:
        raise ImageDecodeError(f"Expected a picture from {source} but got nothing (0 bytes, empty); try again.")
    looks_like = _describe_non_image(bytes(view[:2048]), data, size)
    if looks_like is not None:
        raise ImageDecodeError(f"Expected a picture from {source} but got {looks_like.rstrip('.')}.")

    img = _open_untrusted(data, max_pixels=max_pixels, source=source)

    _check_size(img.size, source, max_pixels)

    try:
        img.load()
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(
            f"The picture from {source} is truncated or damaged ({img.format or 'unknown format'}, {size:,} bytes: "
            f"{err}); try again."
        ) from err
    return _upright(img, in_place=True)


def _readable_formats() -> tuple[str, ...]:
    Image.init()  # registers every installed plugin; instant after the first call
    return tuple(name for name in _PROVIDER_FORMATS if name in Image.OPEN)


def _describe_non_image(head: bytes, data: Any, size: int) -> str | None:
    """Say what the bytes are when they are obviously not a picture, else None."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text:
        return f"only whitespace ({size:,} bytes, empty)"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text or b"<head" in text:
        return f"an HTML page ({size:,} bytes); this is usually a login, error or proxy page, check the base URL"
    if text.startswith((b"<?xml", b"<svg")):
        return f"an SVG/XML document ({size:,} bytes), which cannot be read as pixels"
    if text[:1] in (b"{", b"["):
        hint = _json_error_hint(data, size)
        return f"JSON ({size:,} bytes): {hint}" if hint else f"JSON ({size:,} bytes)"
    if text.startswith(_BASE64_SIGNATURES):
        return f"base64 text that was not decoded ({size:,} bytes)"
    return None


def _json_error_hint(data: Any, size: int) -> str | None:
    """The sender's own error sentence from a JSON body, shortened; None when there is none."""
    if size > 65536:
        return None
    try:
        body = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        return None
    for _ in range(3):
        if not isinstance(body, dict):
            return None
        for key in ("message", "error", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                message = " ".join(value.split())
                return message if len(message) <= 200 else message[:197] + "..."
        body = body.get("error") or body.get("data")
    return None


def _header_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, for error messages; None for other formats."""
    if len(head) >= 24 and head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    return None


def _check_size(size: tuple[int, int], source: str, max_pixels: int) -> None:
    """Refuse a picture above the pixel cap, or one with no pixels."""
    width, height = size
    if width * height > max_pixels:
        raise _too_large(source, (width, height), max_pixels, None)
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"The picture from {source} is {width}x{height} pixels, which is empty.")


def _too_large(source: str, size: tuple[int, int] | None, max_pixels: int,
               err: Exception | None) -> ImageDecodeError:
    side = math.isqrt(max_pixels)
    cap = f"{max_pixels:,} pixels" + (f" ({side}x{side})" if side * side == max_pixels else "")
    if size is not None:
        what = f"{size[0]}x{size[1]} pixels ({size[0] * size[1]:,})"
    else:
        counted = re.search(r"\((\d+) pixels\)", str(err)) if err is not None else None
        what = f"{int(counted.group(1)):,} pixels" if counted else "too large to decode safely"
    return ImageDecodeError(
        f"The picture from {source} is {what}, more than the limit of {cap}; ask for a smaller size."
    )


def _upright(img: Image.Image, *, in_place: bool) -> Image.Image:
    """Apply the EXIF orientation so the pixels are as a viewer shows them."""
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make good pixels unusable
        logger.debug("ignoring unreadable EXIF data", exc_info=True)
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    if in_place:
        ImageOps.exif_transpose(img, in_place=True)
        return img
    transposed = ImageOps.exif_transpose(img)
    return img if transposed is None else transposed


# --------------------------------------------------------------------------------------------------------------
# checking bytes before they count as a picture; reading local picture files
# --------------------------------------------------------------------------------------------------------------

MAX_PICTURE_FILE_BYTES = 50 * 1024 * 1024
"""The largest local picture file (reference, mask, control) read: 50 MiB, ample for a picture that is sent at
1024 px at most."""

# Formats a provider's result may be in, by Pillow format name; MPO is a multi-picture JPEG (the jpg extension).
_RESULT_FORMATS = {"PNG": "png", "JPEG": "jpg", "MPO": "jpg", "WEBP": "webp"}
_JPEG_END = b"\xff\xd9"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk: no data, a fixed CRC
_TAIL = 4096  # the end of a PNG or JPEG is looked for in this many last bytes (some writers pad after it)
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISCHR, "a device"),
               (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
_SPECIAL_FILE = "a special file"


@dataclass(frozen=True)
class PictureInfo:
    """What :func:`check_picture` found: the file extension (``png``, ``jpg`` or ``webp``), the size in pixels
    and the length of the encoded bytes."""

    extension: str
    width: int
    height: int
    nbytes: int


def check_picture(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, source: str) -> PictureInfo:
    """Check that bytes are a whole PNG, JPEG or WebP picture within ``max_pixels``, without decoding its pixels.

    Cheap enough for every answer and every receipt read (about 1 ms for a 1024x1024 PNG, mostly its checksums,
    and far less for JPEG and WebP): the header gives the format and size, a PNG's chunks are read to their end
    with their checksums, a JPEG must end with its end-of-image marker and a WebP must be as long as its header
    says. Damage inside the compressed pixels is found only by :func:`open_image`.

    Args:
        data: the encoded bytes, as received or as read from disk.
        max_pixels: the largest ``width * height`` accepted (a decompression bomb is refused before any decoding).
        source: where the bytes came from, for the message ("WaveSpeed's result URL of prediction 1a2b").

    Raises:
        ImageDecodeError: one sentence naming ``source`` and what came instead: nothing, an HTML page, JSON (with
            the sender's own error sentence), other text, another kind of file or picture, a truncated or damaged
            picture, or one larger than ``max_pixels``.
    """
    view = memoryview(data)
    size = view.nbytes
    if size == 0:
        raise ImageDecodeError(f"Expected a picture from {source} but got nothing (0 bytes, empty); try again.")
    extension = picture_extension(data)
    if extension == "bin":
        looks_like = _describe_non_image(bytes(view[:2048]), data, size)
        if looks_like is not None:
            raise ImageDecodeError(f"Expected a picture from {source} but got {looks_like.rstrip('.')}.")
    img = _open_untrusted(data, max_pixels=max_pixels, source=source)
    with img:
        if _RESULT_FORMATS.get(str(img.format)) != extension:
            raise ImageDecodeError(
                f"Expected a PNG, JPEG or WebP picture from {source} but got a {img.format} picture ({size:,} bytes); "
                "choose PNG or JPEG output."
            )
        _check_size(img.size, source, max_pixels)
        width, height = img.size
        try:
            whole = _structure_is_whole(img, view)
        except _DECODE_ERRORS as err:
            raise ImageDecodeError(
                f"The picture from {source} is truncated or damaged ({img.format}, {size:,} bytes: {err}); try again."
            ) from err
    if not whole:
        raise ImageDecodeError(
            f"The picture from {source} is truncated ({img.format}, {size:,} bytes, its end is missing); try again."
        )
    return PictureInfo(extension, width, height, size)


def _structure_is_whole(img: Image.Image, view: memoryview) -> bool:
    """Whether the encoded structure reaches its end: raises on a damaged PNG chunk, False when the end is cut."""
    if img.format == "PNG":
        img.verify()  # every chunk up to IEND, with its CRC; raises when one is damaged or missing
        return bytes(view[-_TAIL:]).rfind(_PNG_END) >= 0  # verify() does not read IEND's own CRC
    if img.format in ("JPEG", "MPO"):
        return bytes(view[-_TAIL:]).rfind(_JPEG_END) >= 0
    declared = struct.unpack("<I", bytes(view[4:8]))[0] + 8  # WebP: the RIFF size plus its 8-byte header
    return view.nbytes >= declared


def read_picture_file(path: str | os.PathLike[str], *, what: str = "reference",
                      max_bytes: int = MAX_PICTURE_FILE_BYTES) -> bytes:
    """The bytes of a local picture file (a reference, mask or control picture), read with a bound.

    Anything but a regular file (a folder, a pipe, a device such as ``/dev/zero``, a socket) is refused before it
    is read, and so is a file over ``max_bytes``; a file that grows while it is read is cut at ``max_bytes + 1``
    bytes and refused. The bytes are not checked to be a picture: :func:`open_image` does that.

    Raises:
        ValidationError: (``field=what``) the file is missing or unreadable, not a regular file, or too large; the
            message names the file.
    """
    file = Path(path)
    try:
        kind = _not_regular(os.stat(file).st_mode)  # refused before it is opened: opening a device can act
        if kind is None:
            # O_NONBLOCK: if a pipe takes the file's place meanwhile, opening it does not wait for a writer.
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            with os.fdopen(fd, "rb", buffering=0) as stream:
                info = os.fstat(stream.fileno())
                kind = _not_regular(info.st_mode)
                if kind is None:
                    if info.st_size > max_bytes:
                        raise _file_too_large(file, what, info.st_size, max_bytes)
                    data = _read_at_most(stream, min(info.st_size, max_bytes) + 1)
                    if len(data) > max_bytes:
                        raise _file_too_large(file, what, len(data), max_bytes)
                    return data
    except OSError as err:
        raise ValidationError(f"Cannot read the {what} picture {file}: {err.strerror or err}.", field=what) from None
    raise ValidationError(f"The {what} {file} is {kind}, not a picture file; give a PNG, JPEG or WebP file.",
                          field=what)


def _not_regular(mode: int) -> str | None:
    """What a file is when it is not a regular file ("a folder", "a pipe"...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), _SPECIAL_FILE)


def _read_at_most(stream: io.RawIOBase, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``, fewer at its end."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _file_too_large(file: Path, what: str, size: int, max_bytes: int) -> ValidationError:
    return ValidationError(
        f"The {what} {file} is {size:,} bytes, more than the {max_bytes:,} bytes ({_mebibytes(max_bytes)}) a picture "
        "file may be; give a smaller PNG, JPEG or WebP file.", field=what)


def _mebibytes(size: int) -> str:
    return f"{size / (1024 * 1024):.3g} MiB"


# --------------------------------------------------------------------------------------------------------------
# PIL -> arrays -> tensors
# --------------------------------------------------------------------------------------------------------------


def image_to_array(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a PIL image into 8-bit colour and float alpha.

    Returns:
        ``(rgb, alpha)``: ``rgb`` is uint8 ``[H, W, 3]``; ``alpha`` is float32 ``[H, W]`` in 0..1 (1 = opaque),
        or None when the picture has no transparency.  ``rgb`` may be a read-only view of the decoded pixels; copy
        it before writing to it.

    Modes: RGB, RGBA, LA, PA, P (palette, with or without transparency), L, 1, CMYK, YCbCr, LAB, HSV, RGBa, La;
    16-bit greyscale (I;16, I;16B, I) is scaled from 0..65535 to 0..255 with rounding, not clipped; F (float) is
    read on the 0..255 scale like Pillow's own conversions, clipped and rounded.
    """
    rgb, alpha = _split_channels(img)
    if alpha is None:
        return rgb, None
    return rgb, np.divide(alpha, np.float32(255), dtype=np.float32)


def _split_channels(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rgb uint8 [H,W,3], alpha uint8 [H,W] or None)``, as views of the decoded pixels when possible."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img), None
    if mode == "RGBA":
        pixels = np.asarray(img)
        return pixels[..., :3], pixels[..., 3]
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_channels(img)
    if mode == "F":
        values = np.nan_to_num(np.asarray(img), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    return _split_channels(img.convert("RGBA" if img.has_transparency_data else "RGB"))


def _sixteen_bit_channels(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    raw = np.asarray(img)
    values = np.clip(raw, 0, 65535) if img.mode == "I" else raw
    # round(v * 255 / 65535) == round(v / 257) == (v + 128) // 257, exact in integers
    grey = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    alpha = None
    key = img.info.get("transparency")
    if isinstance(key, int):
        alpha = np.where(raw == key, np.uint8(0), np.uint8(255))
    return np.repeat(grey[..., None], 3, axis=2), alpha


def _u8_to_float(pixels: np.ndarray) -> torch.Tensor:
    """``pixels / 255`` as one float32 tensor; its storage is the only full-size allocation."""
    torch = import_torch()

    # The same float32 values as torch's ``u8.to(float32).div_(255)``, computed single-threaded: torch's
    # parallel kernels stall badly when the other cores are busy, as they are while ComfyUI runs a workflow.
    values = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255), out=values)
    return torch.from_numpy(values)


def bytes_to_tensor(
    blobs: Sequence[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str = "the provider",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode encoded pictures into one IMAGE batch and its MASK.

    Returns:
        ``(image, mask)``: ``image`` is float32 ``[B, H, W, 3]`` in 0..1 on the CPU.  ``mask`` is None when no
        picture has transparency; otherwise float32 ``[B, H, W]`` with ComfyUI ``LoadImage``'s convention
        ``mask = 1 - alpha`` (1.0 = transparent).  Pictures of the batch without transparency get an all-zeros
        mask, i.e. fully opaque, which is what ``LoadImage`` reports for them too.

    Raises:
        ImageDecodeError: a picture cannot be decoded (see :func:`open_image`).
        ValidationError: no pictures, or pictures of different sizes (a batch needs one size; nothing is resized).
        MissingPackageError: torch is not installed (the message names the pip command).
    """
    import_torch()  # before any decoding: without torch, say so at once
    if isinstance(blobs, (bytes, bytearray, memoryview)):
        blobs = [bytes(blobs)]
    count = len(blobs)
    if count == 0:
        raise ValidationError(f"{source[:1].upper() + source[1:]} returned no pictures.", field="images")

    batch: np.ndarray | None = None
    alpha_batch: np.ndarray | None = None
    first_size: tuple[int, int] | None = None
    for index, blob in enumerate(blobs):
        img = open_image(blob, max_pixels=max_pixels, source=source)
        rgb, alpha = _split_channels(img)
        del img
        height, width = rgb.shape[:2]
        if first_size is None:
            first_size = (width, height)
            # A single picture is converted straight from its decoded pixels: no staging copy.
            batch = rgb[None] if count == 1 else np.empty((count, height, width, 3), dtype=np.uint8)
        elif (width, height) != first_size:
            raise ValidationError(
                f"{source[:1].upper() + source[1:]} returned pictures of different sizes: "
                f"{first_size[0]}x{first_size[1]} and {width}x{height}; a batch needs one size.",
                field="images",
            )
        if count > 1:
            assert batch is not None  # set with the first picture
            batch[index] = rgb
        if alpha is not None:
            if alpha_batch is None:
                alpha_batch = np.full((count, height, width), 255, dtype=np.uint8)
            alpha_batch[index] = alpha
        del rgb, alpha

    assert batch is not None  # count > 0, so the loop ran
    image = _u8_to_float(batch)
    del batch
    mask = None
    if alpha_batch is not None:
        mask = _u8_to_float(alpha_batch)
        np.subtract(np.float32(1), mask.numpy(), out=mask.numpy())
    return image, mask


def b64_to_tensor(items: Sequence[str], **kw: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode base64 pictures (bare or ``data:`` URLs) into ``(image, mask)``; see :func:`bytes_to_tensor`."""
    if isinstance(items, str):
        items = [items]
    return bytes_to_tensor([decode_base64(item) for item in items], **kw)


# --------------------------------------------------------------------------------------------------------------
# tensors -> PIL -> upload bytes
# --------------------------------------------------------------------------------------------------------------

_EXPECTED = "expected [batch, height, width, 3] (channels last)"


def _check_layout(image: Any) -> None:
    torch = import_torch()

    if not isinstance(image, torch.Tensor):
        raise ValidationError(
            f"The image input is a {type(image).__name__}; expected a tensor [batch, height, width, 3].",
            field="image",
        )
    shape = list(image.shape)
    if image.ndim not in (3, 4) or shape[-1] not in (3, 4):
        raise ValidationError(f"The image input has shape {shape}; {_EXPECTED}.", field="image")
    if image.numel() == 0:
        raise ValidationError(
            f"The image input is empty (shape {shape}); connect a node that produces a picture.", field="image"
        )
    if not image.dtype.is_floating_point:
        raise ValidationError(
            f"The image input has type {str(image.dtype).replace('torch.', '')}; expected float values in 0..1.",
            field="image",
        )


def _check_finite(image: torch.Tensor) -> None:
    torch = import_torch()

    # min and max propagate NaN and keep infinities: a read-only pass with no full-size boolean temporary.
    if image.device.type == "cpu" and image.dtype in (torch.float32, torch.float64, torch.float16):
        values = image.numpy()
        low, high = values.min(), values.max()
    else:
        low, high = torch.aminmax(image)
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise ValidationError(
            "The image input contains NaN or infinite values; check the node that produced it.", field="image"
        )


def _picture_to_uint8(picture: torch.Tensor) -> np.ndarray:
    """``round(clamp(picture, 0, 1) * 255)`` as uint8 ``[H, W, C]`` on the CPU, checking for NaN/inf.

    Works in blocks of rows through one small scratch buffer that stays in cache: no full-size float
    temporaries, flat memory for very large references, and single-threaded numpy kernels that keep their speed
    when the other cores are busy.
    """
    torch = import_torch()

    height, width, channels = picture.shape
    out = np.empty((height, width, channels), dtype=np.uint8)
    rows = max(1, _CONVERT_BLOCK_ELEMENTS // (width * channels))
    scratch = np.empty((min(rows, height), width, channels), dtype=np.float32)
    for start in range(0, height, rows):
        block = picture[start : start + rows].to(device="cpu", dtype=torch.float32)
        _check_finite(block)
        work = scratch[: block.shape[0]]
        np.clip(block.numpy(), 0.0, 1.0, out=work)
        np.multiply(work, np.float32(255), out=work)
        np.rint(work, out=work)
        out[start : start + rows] = work  # whole numbers in 0..255: the cast to uint8 is exact
    return out


def validate_image_tensor(image: Any) -> None:
    """Check an IMAGE input without converting it.

    Accepts ``[B, H, W, C]`` or ``[H, W, C]`` float tensors with C in (3, 4).  Values outside 0..1 are allowed
    (they are clamped on conversion); NaN and infinities are not.

    Raises:
        ValidationError: (``field="image"``) not a tensor, wrong rank or channel count, empty, not float, or
            containing NaN/inf.  For example: "The image input has shape [1, 3, 512, 512]; expected [batch,
            height, width, 3] (channels last)."
    """
    _check_layout(image)
    _check_finite(image.detach())


def tensor_to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """One picture of an IMAGE tensor as a PIL image (RGB, or RGBA for 4 channels).

    Args:
        image: ``[B, H, W, C]`` or ``[H, W, C]``, C in (3, 4), float in 0..1 (clamped), any device.
        index: which picture of the batch; negative counts from the end.

    Pixels are ``round(clamp(value, 0, 1) * 255)``.  Only the chosen picture is checked for NaN and converted.

    Raises:
        ValidationError: (``field="image"``) see :func:`validate_image_tensor`; or ``index`` outside the batch.
    """
    _check_layout(image)
    picture = image.detach()
    if picture.ndim == 4:
        count = picture.shape[0]
        if not -count <= index < count:
            raise ValidationError(
                f"The image input has {count} picture{'s' if count != 1 else ''}; picture {index} does not exist.",
                field="image",
            )
        picture = picture[index]
    elif index not in (0, -1):
        raise ValidationError(f"The image input has 1 picture; picture {index} does not exist.", field="image")
    return Image.fromarray(_picture_to_uint8(picture))


def mask_batch_size(mask: Any) -> int:
    """How many masks a MASK input holds (``[B, H, W]``, or one ``[H, W]``).

    Raises:
        ValidationError: (``field="mask"``) not a float tensor of rank 2 or 3, empty, or containing NaN/inf.
    """
    import torch

    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or not mask.is_floating_point():
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValidationError(f"The mask input is {shape}; expected a MASK [batch, height, width] of numbers 0-1.",
                              field="mask")
    if mask.numel() == 0:
        raise ValidationError("The mask input is empty.", field="mask")
    if not bool(torch.isfinite(mask.detach()).all()):
        raise ValidationError("The mask input contains NaN or infinite values.", field="mask")
    return int(mask.shape[0]) if mask.ndim == 3 else 1


def mask_to_pil(mask: torch.Tensor, index: int = 0) -> Image.Image:
    """One mask of a MASK tensor as a PIL ``L`` picture: 255 where the mask is 1 (painted), 0 where it is 0.

    Args:
        mask: ``[B, H, W]`` or ``[H, W]`` float in 0..1 (clamped), any device. ComfyUI's MASK is 1 where the artist
            painted in the mask editor, and where LoadImage's picture is transparent.
        index: which mask of the batch.
    """
    import torch

    count = mask_batch_size(mask)
    if not 0 <= index < count:
        raise ValidationError(f"The mask input has {count} mask(s); mask {index} does not exist.", field="mask")
    plane = (mask[index] if mask.ndim == 3 else mask).detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    return Image.fromarray((plane * 255.0).round().to(torch.uint8).numpy(), "L")


def prepare_upload(
    image: Image.Image,
    *,
    max_side: int = 1024,
    fmt: str = "png",
    quality: int = 92,
) -> tuple[bytes, str, str]:
    """Encode a reference picture for upload.

    The picture is turned upright (EXIF orientation), shrunk with Lanczos so its long side is at most
    ``max_side`` (aspect ratio kept, never enlarged, never rejected for being large) and encoded.

    Args:
        fmt: "png" (fast compression level 1, alpha kept), "jpeg"/"jpg" (RGB; transparency is flattened onto
            white; ``quality`` applies) or "webp" (``quality`` applies, alpha kept).

    Returns:
        ``(data, filename, content_type)``, e.g. ``(b"...", "reference.png", "image/png")``, ready for a multipart
        ``(filename, data, content_type)`` tuple.

    Raises:
        ValidationError: unknown ``fmt`` (``field="fmt"``) or ``max_side`` below 1 (``field="max_side"``).
    """
    spec = _UPLOAD_FORMATS.get(str(fmt).lower().lstrip("."))
    if spec is None:
        raise ValidationError(f"Unknown upload format {fmt!r}; use png, jpeg or webp.", field="fmt")
    if max_side < 1:
        raise ValidationError(f"max_side must be at least 1 pixel, got {max_side}.", field="max_side")
    pil_format, extension, content_type = spec

    picture = _uploadable(_upright(image, in_place=False))
    width, height = picture.size
    if max(width, height) > max_side:
        if width >= height:
            size = (max_side, max(1, round(height * max_side / width)))
        else:
            size = (max(1, round(width * max_side / height)), max_side)
        logger.debug("downscaling reference %sx%s to %sx%s", width, height, size[0], size[1])
        picture = picture.resize(size, Image.Resampling.LANCZOS)

    buffer = io.BytesIO()
    if pil_format == "PNG":
        picture.save(buffer, format="PNG", compress_level=1)
    elif pil_format == "JPEG":
        _flatten(picture).save(buffer, format="JPEG", quality=quality)
    else:
        picture.save(buffer, format=pil_format, quality=quality)
    return buffer.getvalue(), f"reference.{extension}", content_type


def _uploadable(img: Image.Image) -> Image.Image:
    """The picture in RGB, RGBA, L or LA, the modes every encoder and the Lanczos filter handle."""
    if img.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in img.info:
        return img
    rgb, alpha = _split_channels(img)
    if alpha is None:
        return Image.fromarray(np.ascontiguousarray(rgb))
    return Image.fromarray(np.dstack((rgb, alpha)))


def _flatten(img: Image.Image) -> Image.Image:
    """RGB for JPEG: transparent parts become white instead of whatever colour hides under them."""
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def tensor_to_upload(
    image: torch.Tensor,
    index: int = 0,
    *,
    max_side: int = 1024,
    fmt: str = "png",
) -> tuple[bytes, str, str]:
    """Encode one picture of an IMAGE tensor for upload: :func:`tensor_to_pil` then :func:`prepare_upload`."""
    return prepare_upload(tensor_to_pil(image, index), max_side=max_side, fmt=fmt)
