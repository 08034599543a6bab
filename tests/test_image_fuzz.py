"""Fuzz pass over the image loaders: every entry point that decodes a user's file — ingest
(:func:`bdirnet.images.decode_image_file`), the real-blur photos (:func:`bdirnet.images.load_image`) and ``bdirnet
deblur`` (:func:`bdirnet.deblur.read_photo`, 16-bit through OpenCV/tifffile) — gets hypothesis-generated files and
byte-mutated PNG/JPEG/TIFF files (8/16-bit, gray, RGBA, palette, CMYK, float TIFF, EXIF; truncations, bit flips,
chunk/segment/IFD corruptions with valid CRCs, huge declared dimensions, wrong extensions).

The property: a decoded image (right shape and dtype, finite values in range) or the entry point's own one-line
error (``BadImage`` / ``ValueError`` naming the file), never another exception, never more than
``SECONDS_PER_EXAMPLE`` per example. Bounded: derandomized (the same examples every run), ``FUZZ_EXAMPLES`` per
test (environment variable, for a deeper run by hand: ``FUZZ_EXAMPLES=3000 pytest tests/test_image_fuzz.py``).
The inputs the fuzz found bugs with are rebuilt by hand below as regression tests.
"""

from __future__ import annotations

import faulthandler
import io
import os
import signal
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bdirnet.config import IngestConfig
from bdirnet.datasets import ingest_folder
from bdirnet.deblur import read_photo
from bdirnet.images import BadImage, decode_image_file, load_image

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
SECONDS_PER_EXAMPLE = 5.0  # each example decodes a tiny file three times: milliseconds, even on a busy 2-core box
MAX_PIXELS = 1_000_000  # huge declared dimensions are decompression bombs at this limit
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # time is bounded by `time_limit`, which also stops a hang
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bin")


# --------------------------------------------------------------------------------------------- valid seed files
def _pillow(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tifffile(array: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _cv2_png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return bytes(encoded.tobytes())


def seed_files() -> dict[str, bytes]:
    """Small valid files of every kind the loaders handle, to mutate (24×32, deterministic)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise
    exif[0x010F] = "fuzz camera"
    rgb16, gray16 = rgb.astype(np.uint16) * 257, gray.astype(np.uint16) * 257
    return {
        "rgb.png": _pillow(image, "PNG"),
        "rgb_exif.png": _pillow(image, "PNG", exif=exif),
        "rgba.png": _pillow(Image.fromarray(np.dstack([rgb, gray])), "PNG"),
        "gray.png": _pillow(Image.fromarray(gray), "PNG"),
        "palette_trns.png": _pillow(image.convert("P"), "PNG", transparency=0),
        "gray16.png": _pillow(Image.fromarray(gray16), "PNG"),
        "rgb16.png": _cv2_png(rgb16),
        "rgba16.png": _cv2_png(np.dstack([rgb16, gray16])),
        "rgb_exif.jpg": _pillow(image, "JPEG", exif=exif),
        "gray.jpg": _pillow(Image.fromarray(gray), "JPEG"),
        "cmyk.jpg": _pillow(image.convert("CMYK"), "JPEG"),
        "progressive.jpg": _pillow(image, "JPEG", progressive=True),
        "rgb_exif.tif": _pillow(image, "TIFF", exif=exif),
        "float.tif": _pillow(Image.fromarray(gray.astype(np.float32) / 255, mode="F"), "TIFF"),
        "gray16_pillow.tif": _pillow(Image.fromarray(gray16), "TIFF"),
        "rgb16.tif": _tifffile(rgb16, photometric="rgb"),
        "rgb16_planar.tif": _tifffile(rgb16.transpose(2, 0, 1), photometric="rgb", planarconfig="separate"),
        "rgba16_zlib.tif": _tifffile(
            np.dstack([rgb16, gray16]), photometric="rgb", extrasamples=("unassalpha",), compression="zlib"
        ),
        "gray16_pages.tif": _tifffile(np.stack([gray16, gray16]), photometric="minisblack"),
    }


SEEDS = seed_files()


# --------------------------------------------------------------------------------------------- structured edits
def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, payload length) of every PNG chunk that fits in ``data``."""
    chunks, offset = [], 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if offset + 12 + length > len(data):
            break
        chunks.append((offset, length))
        offset += 12 + length
    return chunks


def _fix_png_crc(data: bytearray, offset: int, length: int) -> None:
    crc = zlib.crc32(bytes(data[offset + 4 : offset + 8 + length])) & 0xFFFFFFFF
    data[offset + 8 + length : offset + 12 + length] = struct.pack(">I", crc)


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset of the marker, segment length) of the JPEG marker segments before the scan data."""
    segments, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        segments.append((offset, length))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        offset += 2 + length
    return segments


def _tiff_entries(data: bytes) -> tuple[str, list[int]]:
    """Byte order and the offsets of the first IFD's 12-byte entries that lie in ``data`` (none if it has none)."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return order, []
    (first,) = struct.unpack(order + "I", data[4:8])
    if first + 2 > len(data):
        return order, []
    (count,) = struct.unpack(order + "H", data[first : first + 2])
    return order, [first + 2 + 12 * i for i in range(count) if first + 14 + 12 * i <= len(data)]


def set_dimensions(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its header declaring ``width``×``height`` (PNG IHDR with a valid CRC, JPEG SOF, TIFF tags);
    unchanged where the header is not there (an earlier mutation cut it)."""
    out = bytearray(data)
    if out.startswith(b"\x89PNG") and len(out) >= 33:
        out[16:24] = struct.pack(">II", width, height)
        _fix_png_crc(out, 8, 13)
    elif out.startswith(b"\xff\xd8"):
        for offset, _ in _jpeg_segments(data):
            if out[offset + 1] in (0xC0, 0xC1, 0xC2) and offset + 9 <= len(out):
                out[offset + 5 : offset + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    elif out[:4] in (b"II*\x00", b"MM\x00*"):
        order, entries = _tiff_entries(data)
        for entry in entries:
            (tag,) = struct.unpack(order + "H", out[entry : entry + 2])
            if tag in (256, 257):
                out[entry + 2 : entry + 12] = struct.pack(order + "HII", 4, 1, width if tag == 256 else height)
    return bytes(out)


def corrupt_structure(data: bytes, index: int, position: int, value: int) -> bytes:
    """One byte of a PNG chunk (CRC recomputed, so decoders parse it), a JPEG marker segment or a TIFF IFD entry;
    unchanged where there is none."""
    out = bytearray(data)
    if out.startswith(b"\x89PNG"):
        chunks = _png_chunks(data)
        if chunks:
            offset, length = chunks[index % len(chunks)]
            out[offset + 4 + position % (length + 4)] = value  # type or payload
            _fix_png_crc(out, offset, length)
    elif out.startswith(b"\xff\xd8"):
        segments = [(o, n) for o, n in _jpeg_segments(data) if o + 2 + max(n, 1) <= len(data)]
        if segments:
            offset, length = segments[index % len(segments)]
            out[offset + 2 + position % max(length, 1)] = value
    elif out[:4] in (b"II*\x00", b"MM\x00*"):
        _, entries = _tiff_entries(data)
        if entries:
            out[entries[index % len(entries)] + position % 12] = value
    return bytes(out)


def retype_tiff_entry(data: bytes, index: int, field_type: int) -> bytes:
    """``data`` with entry ``index`` of its first TIFF IFD given the field type ``field_type`` (a TIFF file), or,
    in a JPEG or PNG, of the EXIF block's IFD; unchanged where there is none."""
    start = 0 if data[:4] in (b"II*\x00", b"MM\x00*") else data.find(b"Exif\x00\x00") + 6
    if start < 0 or start == 5:  # no EXIF block
        return data
    order, entries = _tiff_entries(data[start:])
    if not entries:
        return data
    at = start + entries[index % len(entries)] + 2
    return data[:at] + struct.pack(order + "H", field_type) + data[at + 2 :]


INTERESTING = st.sampled_from(
    [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"]
)
OFFSETS = st.integers(0, 2**16)  # taken modulo the length: shrinks towards the header


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A seed file under a few mutations, and the extension to save it with (often the wrong one)."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = SEEDS[name]
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["truncate", "flip", "overwrite", "delete", "duplicate", "dims", "structure", "retype"]
        kind = draw(st.sampled_from(kinds))
        n = len(data)
        if n == 0:
            break
        if kind == "truncate":
            data = data[: draw(OFFSETS) % n]
        elif kind == "flip":
            at = draw(OFFSETS) % n
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif kind == "overwrite":
            at, chunk = draw(OFFSETS) % n, draw(INTERESTING | st.binary(min_size=1, max_size=8))
            data = data[:at] + chunk + data[at + len(chunk) :]
        elif kind == "delete":
            at = draw(OFFSETS) % n
            data = data[:at] + data[at + draw(st.integers(1, 64)) :]
        elif kind == "duplicate":
            at = draw(OFFSETS) % n
            data = data[:at] + data[at : at + draw(st.integers(1, 64))] + data[at:]
        elif kind == "dims":
            side = st.sampled_from([0, 1, 3, 65535, 100_000, 2**31 - 1, 2**32 - 1]) | st.integers(0, 70_000)
            data = set_dimensions(data, draw(side), draw(side))
        elif kind == "structure":
            data = corrupt_structure(data, draw(st.integers(0, 40)), draw(OFFSETS), draw(st.integers(0, 255)))
        else:  # a TIFF IFD entry (or an EXIF one) given another of the 13 field types
            data = retype_tiff_entry(data, draw(st.integers(0, 40)), draw(st.integers(0, 13)))
    extension = draw(st.sampled_from([Path(name).suffix, *EXTENSIONS]))
    return extension, data


# Valid files some entry point refuses (with its one-line error): deblur keeps integer photos only, and Pillow (every
# entry point's first decoder) has no 16-bit gray + alpha TIFF.
EVERY_ENTRY_POINT = frozenset({"ingest", "real_blur", "deblur"})
REFUSED = {"TIFF_FLOAT": frozenset({"deblur"}), "TIFF16-2": EVERY_ENTRY_POINT}


@st.composite
def generated_files(draw: st.DrawFn) -> tuple[str, bytes, frozenset[str]]:
    """A valid file made from hypothesis-generated pixels: PNG/JPEG/TIFF, 8/16-bit or float, 1-4 channels, with
    a well-formed or garbage EXIF block; and the entry points that refuse it (:data:`REFUSED`)."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "TIFF", "TIFF16", "TIFF_FLOAT", "PNG16"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    channels = draw(st.sampled_from([1, 2, 3, 4]))
    exif: bytes | None = None
    if draw(st.booleans()):
        block = Image.Exif()
        block[0x0112] = draw(st.integers(0, 10))
        garbage = fmt in ("PNG", "JPEG") and draw(st.booleans())  # Pillow writes a TIFF's EXIF as tags: no garbage
        exif = b"Exif\x00\x00" + draw(st.binary(max_size=40)) if garbage else block.tobytes()
    if fmt in ("PNG", "JPEG", "TIFF"):
        array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        if fmt == "JPEG" and channels in (2, 4):  # JPEG has no alpha
            array = array[..., : channels - 1]
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, mode=mode)
        options: dict[str, Any] = {"exif": exif} if exif else {}
        return f".{fmt.lower()}", _pillow(image, fmt, **options), frozenset()
    if fmt == "PNG16":
        array16 = rng.integers(0, 65536, (height, width, channels if channels != 2 else 3), dtype=np.uint16)
        return ".png", _cv2_png(array16[..., 0] if channels == 1 else array16), frozenset()
    if fmt == "TIFF_FLOAT":
        values = rng.random((height, width), dtype=np.float32) * draw(st.sampled_from([1.0, 255.0, 1e6]))
        return ".tif", _pillow(Image.fromarray(values, mode="F"), "TIFF"), REFUSED["TIFF_FLOAT"]
    array16 = rng.integers(0, 65536, (height, width, channels), dtype=np.uint16)
    photometric = "minisblack" if channels < 3 else "rgb"
    extrasamples = ("unassalpha",) if channels in (2, 4) else None
    data = array16[..., 0] if channels == 1 else array16
    refused = REFUSED.get(f"TIFF16-{channels}", frozenset())
    return ".tif", _tifffile(data, photometric=photometric, extrasamples=extrasamples), refused


# --------------------------------------------------------------------------------------------- the property
class TooSlow(BaseException):
    """Raised by the example timer: a BaseException, so no decoder's ``except Exception`` can swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds``. A hang inside C code, where the alarm cannot interrupt,
    is ended by faulthandler after ``4 × seconds``: the tracebacks are printed and the process exits (a failed
    run, never a stuck one)."""

    def alarm(_signum: int, _frame: object) -> None:
        raise TooSlow(f"an example took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(4 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def assert_one_line(message: str, path: Path | None = None) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message, message
    if path is not None:
        assert message.startswith(f"{path}: "), f"the error does not name the file: {message!r}"


def check_tensor(tensor: torch.Tensor, shape: tuple[int, int]) -> None:
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (1, 3, *shape), (tensor.dtype, tensor.shape)
    assert bool(torch.isfinite(tensor).all()) and float(tensor.min()) >= 0 and float(tensor.max()) <= 1


def decode_all(path: Path) -> dict[str, tuple[int, int] | None]:
    """Every entry point on ``path``: each decoded image's (H, W), or None for the entry point's own error.
    Anything else (another exception, a wrong shape, dtype or range, a multi-line message) fails."""
    results: dict[str, tuple[int, int] | None] = {}
    try:
        array, notes = decode_image_file(path, max_pixels=MAX_PIXELS, min_side_px=1)
    except BadImage as error:
        assert_one_line(str(error))  # ingest prefixes the file name itself
        results["ingest"] = None
    else:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, (array.dtype, array.shape)
        assert 0 < array.shape[0] * array.shape[1] <= MAX_PIXELS
        assert all(isinstance(note, str) and "\n" not in note for note in notes), notes
        results["ingest"] = (array.shape[0], array.shape[1])
    try:
        tensor = load_image(path, max_pixels=MAX_PIXELS)
    except ValueError as error:
        assert_one_line(str(error), path)
        results["real_blur"] = None
    else:
        check_tensor(tensor, (tensor.shape[-2], tensor.shape[-1]))
        results["real_blur"] = (tensor.shape[-2], tensor.shape[-1])
    try:
        photo = read_photo(path, max_pixels=MAX_PIXELS)
    except ValueError as error:
        assert_one_line(str(error), path)
        results["deblur"] = None
    else:
        pixels = photo.pixels
        assert pixels.ndim == 3 and pixels.shape[-1] in (1, 3), pixels.shape
        assert pixels.dtype in (np.uint8, np.uint16) and 0 < pixels.shape[0] * pixels.shape[1] <= MAX_PIXELS
        assert photo.alpha is None or (photo.alpha.shape == pixels.shape[:2] and photo.alpha.dtype == pixels.dtype)
        check_tensor(photo.tensor(), pixels.shape[:2])
        results["deblur"] = (pixels.shape[0], pixels.shape[1])
    # Ingest and the real-blur loader are one decoder; deblur's agrees on the size whenever both decode.
    assert results["ingest"] == results["real_blur"], results
    if results["ingest"] is not None and results["deblur"] is not None:
        assert results["ingest"] == results["deblur"], results
    return results


def run_example(tmp_path: Path, extension: str, data: bytes) -> dict[str, tuple[int, int] | None]:
    path = tmp_path / f"fuzzed{extension}"
    path.write_bytes(data)
    with warnings.catch_warnings(), time_limit(SECONDS_PER_EXAMPLE):
        warnings.simplefilter("ignore")  # Pillow warns about odd TIFF tags; what counts is what it returns
        return decode_all(path)


# --------------------------------------------------------------------------------------------- the fuzz tests
def test_every_seed_file_decodes_everywhere(tmp_path: Path) -> None:
    """The unmutated seeds are valid photos: every entry point decodes them (so the mutants start from files that
    reach deep into each decoder, not from files refused at the first byte)."""
    for name, data in SEEDS.items():
        results = run_example(tmp_path, Path(name).suffix, data)
        want = (32, 24) if "exif" in name else (24, 32)  # orientation 6 turns the 32-wide image upright
        float_tiff = name == "float.tif"  # deblur keeps 8/16-bit integer photos only: a one-line refusal
        assert results == {"ingest": want, "real_blur": want, "deblur": None if float_tiff else want}, name


@FUZZ
@given(example=mutated_files())
def test_mutated_files_decode_or_fail_in_one_line(tmp_path: Path, example: tuple[str, bytes]) -> None:
    run_example(tmp_path, *example)


@FUZZ
@given(example=generated_files())
def test_generated_files_decode_or_fail_in_one_line(tmp_path: Path, example: tuple[str, bytes, frozenset[str]]) -> None:
    extension, data, refused = example
    results = run_example(tmp_path, extension, data)
    assert {entry for entry, size in results.items() if size is None} == refused, results  # valid files decode


# --------------------------------------------------------------------------------------------- regressions
def _ifd_entry(data: bytes, tag: int) -> int:
    order, entries = _tiff_entries(data)
    return next(e for e in entries if struct.unpack(order + "H", data[e : e + 2])[0] == tag)


def tiff_with_text_strip_offsets() -> bytes:
    """An 8-bit TIFF whose StripOffsets entry is typed ASCII: Pillow's loader raised TypeError (a traceback that
    stopped the whole ingest, and `bdirnet deblur` too)."""
    data = bytearray(_pillow(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "TIFF"))
    struct.pack_into("<H", data, _ifd_entry(bytes(data), 273) + 2, 2)  # type LONG -> ASCII
    return bytes(data)


def tiff_with_a_page_loop() -> bytes:
    """A 16-bit TIFF whose first page points to an empty page that points to itself: tifffile.imread, which
    read_photo used, walked the chain forever (a hang; Pillow reads the first page fine)."""
    data = bytearray(_pillow(Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), "TIFF"))
    (first,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[first : first + 2])
    empty = len(data) + len(data) % 2
    data += b"\x00" * (empty - len(data)) + struct.pack("<HI", 0, empty)
    struct.pack_into("<I", data, first + 2 + 12 * count, empty)
    return bytes(data)


REGRESSIONS: dict[str, Callable[[], bytes]] = {
    "text_strip_offsets.tif": tiff_with_text_strip_offsets,
    "page_loop.tif": tiff_with_a_page_loop,
}


def test_corrupt_tiff_tag_type_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "tags.tif"
    path.write_bytes(tiff_with_text_strip_offsets())
    with pytest.raises(BadImage, match=r"^cannot decode \(TypeError: .*\); corrupt$"):
        decode_image_file(path)
    for entry_point in (load_image, read_photo):
        with pytest.raises(ValueError, match=rf"^{path}: cannot decode \(TypeError"):
            entry_point(path)


def test_tiff_page_loop_is_read_by_its_first_page(tmp_path: Path) -> None:
    path = tmp_path / "loop.tif"
    path.write_bytes(tiff_with_a_page_loop())
    with time_limit(SECONDS_PER_EXAMPLE):
        photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16 and photo.pixels.shape == (8, 8, 1)
    assert np.array_equal(photo.pixels[..., 0], np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)


@pytest.mark.parametrize("layout", ["planar", "pages", "cmyk"])
def test_sixteen_bit_tiff_layouts_keep_their_pixels(tmp_path: Path, layout: str) -> None:
    """read_photo read 16-bit TIFFs with tifffile.imread, whose array is not always (H, W, C) RGB: a planar RGB
    file came back (3, H, W) (restored as a 3-px-high image), a multi-page file as a 4-D stack (a crash in
    ``Photo.tensor``), CMYK as RGB plus K for alpha (wrong colours, silently)."""
    rgb16 = (np.random.default_rng(1).integers(0, 256, (12, 20, 3)) * 257).astype(np.uint16)
    path = tmp_path / f"{layout}.tif"
    if layout == "planar":
        tifffile.imwrite(path, rgb16.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    elif layout == "pages":
        tifffile.imwrite(path, np.stack([rgb16, rgb16[::-1]]), photometric="rgb")
    else:
        tifffile.imwrite(path, np.dstack([rgb16, rgb16[..., :1]]), photometric="separated")
    photo = read_photo(path)
    if layout == "cmyk":  # Pillow's CMYK -> RGB, as ingest converts it; no alpha
        ingested, _ = decode_image_file(path)
        assert photo.alpha is None and photo.pixels.dtype == np.uint8 and np.array_equal(photo.pixels, ingested)
    else:  # the first page, 16-bit, pixel for pixel
        assert photo.alpha is None and photo.pixels.dtype == np.uint16 and np.array_equal(photo.pixels, rgb16)


def test_a_tiff_no_decoder_reads_is_called_a_tiff_not_a_non_image(tmp_path: Path) -> None:
    """A valid TIFF that Pillow cannot decode (16-bit gray + alpha) was reported as "not an image"."""
    path = tmp_path / "gray_alpha16.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 2), np.uint16), photometric="minisblack", extrasamples=("unassalpha",))
    with pytest.raises(BadImage, match=r"^a TIFF file no decoder here reads \(an unsupported layout, or corrupt\)$"):
        decode_image_file(path)
    (tmp_path / "notes.tif").write_text("a text file named like a TIFF")
    with pytest.raises(BadImage, match=r"^not an image"):
        decode_image_file(tmp_path / "notes.tif")


def fuzzed_folder_files() -> dict[str, bytes]:
    """A folder's worth of bad files: the regressions, and deterministic mutants of every seed that no decoder
    accepts (truncated halfway, the header zeroed, a 100 000² PNG header, a wrong extension)."""
    files = {name: make() for name, make in REGRESSIONS.items() if name != "page_loop.tif"}
    for name, data in SEEDS.items():
        stem, ext = name.rsplit(".", 1)
        files[f"{stem}_half.{ext}"] = data[: len(data) // 2]
        files[f"{stem}_zeroed.{ext}"] = b"\x00" * 16 + data[16:]
    files["bomb.png"] = set_dimensions(SEEDS["rgb.png"], 100_000, 100_000)
    files["text_as.jpg"] = b"not a photo, whatever its extension says\n"
    return files


def test_ingest_quarantines_each_fuzzed_file_in_one_line_and_ingests_the_rest(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    bad = fuzzed_folder_files()
    for name, data in bad.items():
        (raw / name).write_bytes(data)
    good = {"good.png": SEEDS["rgb.png"], "good.jpg": SEEDS["rgb_exif.jpg"], "good16.tif": SEEDS["rgb16.tif"]}
    for name, data in good.items():
        (raw / name).write_bytes(data)
    rules = IngestConfig(min_side_px=16, max_pixels=MAX_PIXELS, min_test_photos=0, min_val_photos=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ingest_folder(raw, tmp_path / "out", rules)
    assert {r.name for r in report.images} == set(good)
    assert set(report.quarantined) == set(bad)
    lines = (tmp_path / "out" / "quarantine.txt").read_text().splitlines()
    assert len(lines) == len(bad) and sorted(lines) == sorted(f"{n}: {why}" for n, why in report.quarantined.items())
    for line in lines:
        assert_one_line(line)
    assert "decompression bomb" in report.quarantined["bomb.png"]
    assert "TypeError" in report.quarantined["text_strip_offsets.tif"]
    assert report.quarantined["text_as.jpg"].startswith("not an image")
