"""Image I/O, in one place: files and PNG bytes <-> uint8 arrays <-> float tensors.

Conventions: an *array* is ``(H, W, 3)`` (or ``(N, H, W, 3)``) ``uint8`` RGB; a *tensor* is ``(N, 3, H, W)`` float32
in [0, 1]. Every conversion between them lives here (as BasicSR keeps ``img2tensor``/``tensor2img`` in
``utils/img_util.py``), and :func:`decode_image_file` is the one validated decoder of photo files: ingest and the
real-blur photos of evaluation both go through it.

Example:
    >>> import numpy as np
    >>> array = np.zeros((4, 5, 3), dtype=np.uint8)
    >>> to_tensor(array).shape, to_uint8(to_tensor(array)).shape
    (torch.Size([1, 3, 4, 5]), (1, 4, 5, 3))
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000


class BadImage(ValueError):
    """A file that is not a usable photo; the message says why (the caller adds the file name)."""


# --------------------------------------------------------------------------------------------- arrays <-> tensors
def to_float_array(images: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [0, 1] (numpy, for Ray Data batches)."""
    batch = images[None] if images.ndim == 3 else images
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 tensor in [0, 1]."""
    return torch.from_numpy(to_float_array(images))


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` float in [0, 1] -> ``(N, H, W, 3)`` uint8, clamped and rounded."""
    return (batch.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------------------------- PNG bytes
def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an ``(H, W, 3)`` uint8 array, deterministic. zlib level 1, the one PNG level of the
    pipeline: ingest writes 324 photos in 35 s instead of 88 at Pillow's default 6, 9% larger (stop 16)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 array from PNG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- files
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename: never half-written.
    The file gets the usual permissions (0666 minus the umask), not the temporary file's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an ``(H, W, 3)`` uint8 array as PNG (:func:`encode_png`), atomically."""
    atomic_write(path, encode_png(image))


def read_png(path: Path) -> np.ndarray:
    """A PNG the pipeline wrote, as ``(H, W, 3)`` uint8, naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise ValueError(f"{path}: missing picture (rerun the stage that writes it)")
    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: cannot read the picture ({error})") from None


def one_line(error: object, limit: int = 200) -> str:
    """``str(error)`` on one line (whitespace runs collapsed), cut at ``limit`` characters: decoders' messages can
    span lines or quote whole headers."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _container(path: Path) -> str | None:
    """The format ``path``'s first bytes announce (PNG, JPEG, TIFF), else None."""
    with path.open("rb") as handle:
        head = handle.read(8)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open and fully decode ``path`` with Pillow's bomb limit set to ``max_pixels``."""
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                # Pillow checks the declared size in open(): above the limit it warns (an error here), above
                # twice the limit it raises; either way before any pixel is decoded.
                with Image.open(path) as opened:
                    opened.load()
                    return opened.copy()
            finally:
                Image.MAX_IMAGE_PIXELS = previous_limit
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        kind = _container(path)
        if kind is not None:  # e.g. a float RGB or 16-bit gray + alpha TIFF: "not an image" would mislead
            raise BadImage(f"a {kind} file no decoder here reads (an unsupported layout, or corrupt)") from None
        raise BadImage("not an image (no decoder recognises it)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"cannot decode ({one_line(error)}); truncated or corrupt") from None
    except Exception as error:  # Pillow's parsers raise TypeError, KeyError, struct.error, ... on corrupt headers
        raise BadImage(f"cannot decode ({type(error).__name__}: {one_line(error)}); corrupt") from None


def decode_image_file(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side_px: int = 1
) -> tuple[np.ndarray, list[str]]:
    """Decode and validate one photo file into an ``(H, W, 3)`` uint8 RGB array; returns it and the conversions made.

    EXIF orientation is applied (a corrupt EXIF block is noted and ignored); 16-bit and 32-bit integer images are
    scaled by their type's range (never by their content); palette, alpha, CMYK and grayscale become RGB (alpha
    composited on white).

    Raises:
        BadImage: empty, not an image, truncated, too small, or more than ``max_pixels`` (decompression bomb).
    """
    image = open_checked(path, max_pixels)
    notes: list[str] = []
    try:
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (1, None):
            image = ImageOps.exif_transpose(image)
            notes.append(f"EXIF orientation {orientation} applied")
    except Exception as error:  # Pillow raises many kinds on a broken EXIF block; the pixels are still good
        notes.append(f"corrupt EXIF ignored ({type(error).__name__})")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array16 = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.round(array16 / 65535.0 * 255.0).clip(0, 255).astype(np.uint8))
        notes.append(f"{mode} (16-bit) -> 8-bit")
        mode = image.mode
    elif mode == "I":
        array32 = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array32.max() > 255 else 255.0  # PNG 16-bit often decodes as "I": its values say which
        image = Image.fromarray(np.round(array32 / peak * 255.0).clip(0, 255).astype(np.uint8))
        notes.append(f"I ({'16' if peak > 255 else '8'}-bit values) -> 8-bit")
        mode = image.mode
    elif mode == "F":
        array_f = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array_f).all():
            raise BadImage("floating-point image with NaN or inf values")
        peak = 1.0 if array_f.max() <= 1.0 else 255.0
        image = Image.fromarray(np.round(array_f / peak * 255.0).clip(0, 255).astype(np.uint8))
        notes.append(f"F (32-bit float, range [0, {peak:g}]) -> 8-bit")
        mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = _composite_on_white(image) if has_alpha else image.convert("RGB")
        notes.append("palette -> RGB" + (" (transparency composited on white)" if has_alpha else ""))
    elif mode in ("RGBA", "LA", "PA"):
        image = _composite_on_white(image)
        notes.append(f"{mode} -> RGB (alpha composited on white)")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK -> RGB")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append(f"{mode} (grayscale) -> RGB")
    elif mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as error:
            raise BadImage(f"unsupported pixel mode {mode!r} ({error})") from None
        notes.append(f"{mode} -> RGB")

    width, height = image.size
    if min(width, height) < min_side_px:
        raise BadImage(f"too small: {width}×{height}, shorter side < min_side_px {min_side_px}")
    return np.asarray(image, dtype=np.uint8), notes


def load_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A photo file as a ``(1, 3, H, W)`` float tensor in [0, 1], validated by :func:`decode_image_file`.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    try:
        array, _ = decode_image_file(path, max_pixels=max_pixels)
    except BadImage as error:
        raise ValueError(f"{path}: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    return to_tensor(array)
