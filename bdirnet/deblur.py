"""Deblur your own photos: any size (tiled, seamless, bounded memory), real files as they come, never half-written.

- :func:`restore`: a network on one ``(1, 3, H, W)`` image in [0, 1], whole or in overlapping tiles blended with a
  raised-cosine window (no hard cuts); checks its input first (NaN/inf, range, dtype) with a one-line error.
- :func:`tile_for_memory`: the largest tile whose activations fit a memory budget, measured on the network itself.
- :func:`read_photo` / :func:`write_photo`: EXIF orientation applied, EXIF (orientation reset) and ICC written back,
  grayscale stays grayscale, alpha passes through untouched, 16-bit PNG/TIFF stays 16-bit; the bomb limit and the
  decoder checks of :mod:`bdirnet.images`; output written to a temporary name, then renamed.
- :func:`load_network`: ``models:/bdirnet@<alias>``, ``models:/bdirnet/<version>`` (MLflow registry), a run's
  weights file ``models/<run>.pt`` (no MLflow needed), or an ONNX / TorchScript file of ``bdirnet export``.

Example:
    >>> from bdirnet.deblur import load_network, read_photo, restore, write_photo  # doctest: +SKIP
    >>> network = load_network("models/bdirnet-s0.pt")  # doctest: +SKIP
    >>> photo = read_photo(Path("my_photo.jpg"))  # doctest: +SKIP
    >>> write_photo(Path("out.jpg"), photo, restore(network, photo.tensor(), tile=512))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import itertools
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from bdirnet.images import DEFAULT_MAX_PIXELS, BadImage, atomic_write, one_line, open_checked

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------------- the network
def load_network(spec: str, tracking_uri: str | None = None) -> nn.Module:
    """The network named by ``spec``, in eval mode on the CPU.

    ``models:/bdirnet@champion`` / ``models:/bdirnet/<version>``: from the MLflow registry (``MLFLOW_TRACKING_URI``,
    else ``sqlite:///mlflow.db`` here); a ``.pt`` path: a run's weights file (:mod:`bdirnet.weights`) or a TorchScript
    export; a ``.onnx`` path: an ONNX export, run by onnxruntime (both from ``bdirnet export``, :mod:`bdirnet.export`).

    Raises:
        ValueError: naming the spec and what is wrong (missing file, unknown alias or version, unsupported kind).
    """
    if spec.startswith("models:/"):
        from bdirnet import registry

        uri = tracking_uri or registry.tracking_uri()
        name, _, rest = spec[len("models:/") :].partition("/")
        if "@" in name:
            name, alias = name.split("@", 1)
            version = registry.alias_version(uri, alias) if name == registry.MODEL_NAME else None
            if version is None:
                raise ValueError(
                    f"{spec}: no alias {alias!r} of {name!r} on {registry.redact_uri(uri)} "
                    "(run `bash scripts/study.sh`, or pass --model models/<run>.pt)"
                )
        else:
            version = rest
        if name != registry.MODEL_NAME or not version.isdigit():
            raise ValueError(
                f"{spec}: expected models:/{registry.MODEL_NAME}@<alias> or models:/{registry.MODEL_NAME}/<n>"
            )
        registry.require_version(uri, version, where=spec)
        model: nn.Module = registry.load_model(uri, version)
        return model.eval()
    path = Path(spec)
    from bdirnet.export import is_torchscript, load_exported

    if path.suffix.lower() == ".onnx" or is_torchscript(path):
        return load_exported(path)
    from bdirnet.weights import load_weights

    network, _ = load_weights(path)
    return network.eval()


# --------------------------------------------------------------------------------------------- restoring a tensor
def check_image(image: Tensor, where: str = "restore") -> None:
    """One-line errors for what a network cannot restore: wrong shape or dtype, NaN/inf, values outside [0, 1]."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"{where}: expected one RGB image of shape (1, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(
            f"{where}: expected float32 (or bf16/fp16) values in [0, 1], got dtype {image.dtype}; "
            "convert with image.float() / 255 for 8-bit data"
        )
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{where}: {bad} NaN or inf value(s) in the input image")
    low, high = float(image.min()), float(image.max())
    if low < -1e-6 or high > 1 + 1e-6:
        hint = " (looks like [0, 255]: divide by 255)" if high > 1.5 else ""
        raise ValueError(f"{where}: values must lie in [0, 1], got [{low:.4g}, {high:.4g}]{hint}")


def _ramp(length: int, overlap: int, before: bool, after: bool) -> Tensor:
    """A 1-D blending window: a raised-cosine ramp over ``overlap`` px on each side that meets another tile."""
    window = torch.ones(length, dtype=torch.float32)
    if overlap > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap)
        if before:
            window[:overlap] = rise
        if after:
            window[-overlap:] = rise.flip(0)
    return window


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = [*range(0, size - tile, stride), size - tile]
    return sorted(set(starts))


STATISTICS = ("auto", "image", "tile")


def restore(
    network: nn.Module,
    image: Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    statistics: str = "auto",
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Restore one image, whole (``tile=None``) or in ``tile``-px tiles overlapping by ``overlap`` px.

    Overlaps are blended with a raised-cosine window, so there is no seam. ``statistics="image"`` gives every tile
    the SAID/SAIR statistics of the whole image (:class:`WholeImageStatistics`: one extra pass over the tiles per
    normalisation layer), so a tiled restoration differs from the whole one only where a tile's convolutions see
    its border; ``"tile"`` lets each tile use its own (one pass); ``"auto"``: ``"image"`` for a torch network with
    SAID/SAIR layers, else ``"tile"`` (an export or a server, whose layers cannot be reached; a local network, for
    which both are the same). Returns ``(1, 3, H, W)`` float32 on the CPU, in [0, 1]. ``on_tile(done, total)``
    reports progress (of the final pass).
    """
    check_image(image)
    device = torch.device(device)
    height, width = image.shape[-2:]
    if tile is not None and (tile < 16 or not 0 <= overlap < tile // 2):
        raise ValueError(f"restore: need tile >= 16 and 0 <= overlap < tile / 2, got tile {tile}, overlap {overlap}")
    if statistics not in STATISTICS:
        raise ValueError(f"restore: statistics must be one of {STATISTICS}, got {statistics!r}")
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
    network = network.to(device).eval()

    def run(crop: Tensor) -> Tensor:
        with torch.no_grad(), autocast:
            return network(crop.to(device, torch.float32)).float().clamp(0, 1).cpu()

    if tile is None or (height <= tile and width <= tile):
        result = run(image)
        if on_tile is not None:
            on_tile(1, 1)
        return result
    from bdirnet.model import IMAGE_STATISTICS_LAYERS, statistics_from

    normalising = any(isinstance(module, IMAGE_STATISTICS_LAYERS) for module in network.modules())
    if statistics == "image" and not normalising:
        raise ValueError("restore: statistics='image' needs a torch BDIRNet (its SAID/SAIR layers), not an export")
    if statistics == "tile" or not normalising:
        return _blend(run, image, tile, overlap, on_tile)
    # Tiles on the grid of the network's downsampling, over the image padded as the whole restoration pads it, so
    # every tile's feature maps line up with the whole image's at every level.
    multiple = int(getattr(network, "multiple", 1))
    tile, overlap = tile // multiple * multiple, -(-overlap // multiple) * multiple
    if tile < 2 * overlap + multiple:
        raise ValueError(f"restore: statistics='image' needs tile >= 2 * overlap + {multiple} on the {multiple}-px "
                         f"grid, got tile {tile}, overlap {overlap}")  # fmt: skip
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    padded = F.pad(image, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else image
    source = WholeImageStatistics()
    with statistics_from(source):
        source.collect(run, padded, tile, overlap, multiple)
        return _blend(run, padded, tile, overlap, on_tile)[..., :height, :width]


def _blend(
    run: Callable[[Tensor], Tensor], image: Tensor, tile: int, overlap: int, on_tile: Callable[[int, int], None] | None
) -> Tensor:
    """Every tile through ``run``, blended with raised-cosine windows over the overlaps."""
    height, width = image.shape[-2:]
    output = torch.zeros(1, 3, height, width, dtype=torch.float32)
    weight = torch.zeros(1, 1, height, width, dtype=torch.float32)
    tops, lefts = _starts(height, tile, overlap), _starts(width, tile, overlap)
    total, done = len(tops) * len(lefts), 0
    for i, top in enumerate(tops):
        th = min(tile, height - top)
        rows = _ramp(th, overlap, before=i > 0, after=i < len(tops) - 1)
        for j, left in enumerate(lefts):
            tw = min(tile, width - left)
            cols = _ramp(tw, overlap, before=j > 0, after=j < len(lefts) - 1)
            window = (rows[:, None] * cols[None, :])[None, None]
            restored = run(image[..., top : top + th, left : left + tw])
            output[..., top : top + th, left : left + tw] += restored * window
            weight[..., top : top + th, left : left + tw] += window
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return (output / weight).clamp(0, 1)


class _Collected(Exception):
    """Raised by :class:`WholeImageStatistics` once a tile's share of the pending statistic is added: the rest of
    that tile's forward pass is not needed."""


def _cores(size: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """Each tile's own rows (or columns): the tiles' extents cut in the middle of every overlap, on the
    ``multiple``-px grid, so the cores partition ``[0, size)``."""
    starts = _starts(size, tile, overlap)
    cuts = [0]
    for before, after in itertools.pairwise(starts):
        cuts.append(max(after, (before + tile + after) // 2 // multiple * multiple))
    cuts.append(size)
    return [(cuts[k] - start, cuts[k + 1] - start) for k, start in enumerate(starts)]


class WholeImageStatistics:
    """The per-channel mean and std every SAID/SAIR normalisation would see on the whole image, gathered tile by tile
    (a :data:`~bdirnet.model.StatisticsSource`).

    Normalisation layers depend on each other (a layer's input passes through the earlier ones), so they are
    gathered one per pass, in the order the network runs them: in each pass every tile runs up to the first layer
    whose statistics are still unknown (the known ones get the whole-image values), adds the sum and sum of squares
    of that layer's input over the tile's own part of the image (:func:`_cores`, scaled to the feature map), and
    stops there. Exact up to what a tile's convolutions see differently near its border.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps
        self.known: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self.pending: tuple[int, str] | None = None
        self.sums: Tensor | None = None
        self.squares: Tensor | None = None
        self.count = 0
        self.core = (0, 0, 0, 0)  # top, bottom, left, right of the current tile's own part, in tile pixels
        self.tile_size = (0, 0)
        self.passes = 0

    def __call__(self, layer: nn.Module | None, slot: str, features: Tensor) -> tuple[Tensor, Tensor]:
        key = (id(layer), slot)
        if key in self.known:
            mean, std = self.known[key]
            return mean.to(features), std.to(features)
        if self.pending is None:
            self.pending = key
        elif key != self.pending:
            raise RuntimeError(f"whole-image statistics: expected layer {self.pending}, the network ran {key}")
        (th, tw), (top, bottom, left, right) = self.tile_size, self.core
        scale_h, scale_w = th // features.shape[-2], tw // features.shape[-1]
        core = features[..., top // scale_h : bottom // scale_h, left // scale_w : right // scale_w].double()
        sums, squares = core.sum(dim=(0, 2, 3)), (core * core).sum(dim=(0, 2, 3))
        self.sums = sums if self.sums is None else self.sums + sums
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += core.shape[0] * core.shape[2] * core.shape[3]
        raise _Collected

    def collect(self, run: Callable[[Tensor], Tensor], image: Tensor, tile: int, overlap: int, multiple: int) -> None:
        """Run passes over the tiles of ``image`` until every statistic is known (a tile then runs through)."""
        height, width = image.shape[-2:]
        tops, lefts = _starts(height, tile, overlap), _starts(width, tile, overlap)
        row_cores, col_cores = _cores(height, tile, overlap, multiple), _cores(width, tile, overlap, multiple)
        while True:
            self.passes += 1
            for top, (core_top, core_bottom) in zip(tops, row_cores, strict=True):
                for left, (core_left, core_right) in zip(lefts, col_cores, strict=True):
                    self.tile_size = (min(tile, height - top), min(tile, width - left))
                    self.core = (core_top, core_bottom, core_left, core_right)
                    try:
                        run(image[..., top : top + self.tile_size[0], left : left + self.tile_size[1]])
                    except _Collected:
                        continue
                    return  # nothing was pending: every statistic is known
            self._finish()

    def _finish(self) -> None:
        if self.pending is None or self.sums is None or self.squares is None:
            raise RuntimeError("whole-image statistics: a pass collected nothing")
        mean = self.sums / self.count
        variance = (self.squares / self.count - mean * mean).clamp_min(0)
        std = (variance + self.eps).sqrt()
        self.known[self.pending] = (mean.float()[None, :, None, None], std.float()[None, :, None, None])
        self.pending, self.sums, self.squares, self.count = None, None, None, 0


def activation_bytes_per_pixel(network: nn.Module, probe_px: int = 64) -> float:
    """Bytes of every module output per input pixel on a ``probe_px``² image (an upper bound of the peak); an exported
    network carries the value measured on its torch network at export time."""
    from bdirnet.export import ExportedNetwork

    if isinstance(network, ExportedNetwork):
        return network.activation_bytes_per_pixel
    total = 0

    def count(_: nn.Module, __: object, output: object) -> None:
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else [output]
        total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, Tensor))

    leaves = [m for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            network.eval()(torch.rand(1, 3, probe_px, probe_px))
    finally:
        for handle in handles:
            handle.remove()
    return total / probe_px**2


def tile_for_memory(
    network: nn.Module, height: int, width: int, max_memory_bytes: int, per_pixel: float | None = None
) -> int | None:
    """The largest tile (a multiple of 32, 64..4096 px) whose activations, with the image buffers, fit the budget;
    ``None`` when the whole image fits. ``per_pixel``: :func:`activation_bytes_per_pixel` of ``network``, when
    already measured (a folder of photos measures it once)."""
    image_buffers = height * width * (3 * 4 * 3 + 4 + 8)  # input, output, sum, weight (float32) + decoded/encoded
    baseline = 400 * 2**20 + sum(p.numel() * p.element_size() for p in network.parameters())  # interpreter, torch
    budget = max_memory_bytes - baseline - image_buffers
    per_pixel = per_pixel if per_pixel is not None else activation_bytes_per_pixel(network)
    if budget >= per_pixel * height * width:
        return None
    if budget <= per_pixel * 64 * 64:
        raise ValueError(
            f"max memory {max_memory_bytes / 2**30:.2f} GiB is too small for a {width}×{height} image "
            f"(needs about {(baseline + image_buffers + per_pixel * 64 * 64) / 2**30:.2f} GiB with 64 px tiles)"
        )
    side = int(math.sqrt(budget / per_pixel)) // 32 * 32
    return max(64, min(4096, side))


# --------------------------------------------------------------------------------------------- files
@dataclass
class Photo:
    """A decoded photo, oriented, with what must be written back unchanged."""

    pixels: np.ndarray  # (H, W, C) uint8 or uint16; C = 1 (gray), 3 (RGB); alpha is kept apart
    alpha: np.ndarray | None  # (H, W), same dtype, passed through untouched
    exif: bytes | None  # with the orientation reset to 1 (the pixels are already upright)
    icc: bytes | None

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def grayscale(self) -> bool:
        return self.pixels.shape[-1] == 1

    def tensor(self) -> Tensor:
        """The photo as the network's input: ``(1, 3, H, W)`` float32 in [0, 1] (gray repeated to RGB)."""
        scale = 65535.0 if self.bit_depth == 16 else 255.0
        rgb = np.repeat(self.pixels, 3, axis=-1) if self.grayscale else self.pixels
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / scale)[None]


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as ``PIL.ImageOps.exif_transpose`` does."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, else None."""
    with path.open("rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) in (b"II*\x00", b"MM\x00*")


def _read_high_depth(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """16-bit colour pixels Pillow would reduce to 8 bits (RGB/RGBA PNG, TIFF), as (H, W, C) uint16; else None.

    ``size``: the ``(width, height)`` Pillow decoded. A TIFF is read by its first page only (Pillow's frame; a
    multi-page file's series, or a corrupt chain of pages, is never walked), and only when that page is 16-bit
    grayscale or RGB of exactly that size (planar or interleaved); any other layout is left to Pillow.
    """
    header = _png_header(path)
    if header is not None:
        if header[0] != 16 or header[1] not in (2, 6):
            return None
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None or array.ndim != 3 or array.shape[1::-1] != size or array.dtype != np.uint16:
            raise BadImage("cannot decode the 16-bit PNG")
        return np.ascontiguousarray(array[..., [2, 1, 0, 3][: array.shape[-1]]])  # BGR(A) -> RGB(A)
    if _is_tiff(path):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages.first
                width, height = size
                if (
                    page.dtype != np.uint16
                    or int(page.photometric) not in (1, 2)  # MINISBLACK, RGB: not CMYK, palette, YCbCr, ...
                    or page.axes not in ("YX", "YXS", "SYX")
                    or (page.imagewidth, page.imagelength) != (width, height)
                ):
                    return None
                array = page.asarray()
        except Exception as error:  # tifffile raises many kinds on a broken file
            raise BadImage(f"cannot decode the TIFF ({type(error).__name__}: {one_line(error)})") from None
        if page.axes == "SYX":
            array = np.moveaxis(array, 0, -1)
        array = array[..., None] if array.ndim == 2 else array
        if array.shape[:2] != (height, width) or array.shape[-1] not in (1, 2, 3, 4):
            return None
        return np.ascontiguousarray(array, dtype=np.uint16)
    return None


def read_photo(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode one photo file for restoring (see module docstring).

    Raises:
        ValueError: naming the file: empty, not an image, truncated, a decompression bomb, an unsupported mode.
    """
    try:
        image = open_checked(path, max_pixels)
        try:
            exif_data = image.getexif()
            orientation = int(exif_data.get(EXIF_ORIENTATION, 1) or 1)
            if orientation != 1:
                exif_data[EXIF_ORIENTATION] = 1
            exif: bytes | None = exif_data.tobytes() if len(exif_data) else None
        except Exception:  # a corrupt EXIF block: the pixels are still good; drop it
            orientation, exif = 1, None
        icc = image.info.get("icc_profile") or None
        high = _read_high_depth(path, image.size)
        alpha = None
        if high is not None:
            pixels = high
            if pixels.shape[-1] in (2, 4):
                pixels, alpha = pixels[..., :-1], pixels[..., -1]
        else:
            mode = image.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                pixels = np.asarray(image, dtype=np.uint16)[..., None]
            elif mode in ("L", "1"):
                pixels = np.asarray(image.convert("L"), dtype=np.uint8)[..., None]
            elif mode in ("LA", "La"):
                both = np.asarray(image.convert("LA"), dtype=np.uint8)
                pixels, alpha = both[..., :1], both[..., 1]
            elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
                both = np.asarray(image.convert("RGBA"), dtype=np.uint8)
                pixels, alpha = both[..., :3], both[..., 3]
            elif mode == "CMYK":
                pixels, icc = np.asarray(image.convert("RGB"), dtype=np.uint8), None  # a CMYK profile no longer fits
            elif mode in ("RGB", "P", "YCbCr", "HSV", "LAB"):
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            else:
                raise BadImage(f"unsupported pixel mode {mode!r} for restoring")
    except BadImage as error:
        raise ValueError(f"{path}: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the file ({error})") from None
    pixels = _orient(pixels, orientation)
    alpha = _orient(alpha, orientation) if alpha is not None else None
    return Photo(pixels=pixels, alpha=alpha, exif=exif, icc=icc)


def _to_pixels(restored: Tensor, photo: Photo) -> np.ndarray:
    """The restored ``(1, 3, H, W)`` tensor in the photo's own layout and bit depth (gray: the channel mean)."""
    array = restored[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)
    if photo.grayscale:
        array = array.mean(axis=-1, keepdims=True)
    scale, dtype = (65535.0, np.uint16) if photo.bit_depth == 16 else (255.0, np.uint8)
    return np.round(array * scale).astype(dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_metadata(png: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (the PNG spec's place for them)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + extra + png[ihdr_end:]


def _encode(pixels: np.ndarray, alpha: np.ndarray | None, photo: Photo, ext: str) -> bytes:
    channels = pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=-1)
    if pixels.dtype == np.uint16:
        if ext in (".tif", ".tiff"):
            import tifffile

            buffer = io.BytesIO()
            data = channels[..., 0] if channels.shape[-1] == 1 else channels
            photometric = "minisblack" if pixels.shape[-1] == 1 else "rgb"
            extrasamples = ("unassalpha",) if alpha is not None else None
            tifffile.imwrite(buffer, data, photometric=photometric, extrasamples=extrasamples, iccprofile=photo.icc)
            return buffer.getvalue()
        import cv2

        order = [0] if channels.shape[-1] == 1 else [2, 1, 0, 3][: channels.shape[-1]]
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(channels[..., order]))
        if not ok:
            raise OSError("cv2 could not encode the 16-bit PNG")
        return _png_with_metadata(encoded.tobytes(), photo.exif, photo.icc)
    squeezed = channels[..., 0] if channels.shape[-1] == 1 else channels
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels.shape[-1]]
    image = Image.fromarray(np.ascontiguousarray(squeezed), mode=mode)
    if ext in (".jpg", ".jpeg") and alpha is not None:
        image = image.convert("L" if pixels.shape[-1] == 1 else "RGB")  # JPEG has no alpha
    options: dict[str, object] = {}
    if photo.exif:
        options["exif"] = photo.exif
    if photo.icc:
        options["icc_profile"] = photo.icc
    if ext in (".jpg", ".jpeg"):
        options |= {"quality": 95, "subsampling": 0}
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()[ext], **options)
    return buffer.getvalue()


def write_photo(path: Path, photo: Photo, restored: Tensor) -> None:
    """Write ``restored`` in the layout, bit depth and metadata of ``photo`` (a 16-bit photo written as JPEG or WebP
    becomes 8-bit), to a temporary name in the same folder and then renamed: never half-written."""
    ext = path.suffix.lower()
    if ext not in Image.registered_extensions():
        raise ValueError(f"{path}: unknown output extension {ext!r}")
    pixels = _to_pixels(restored, photo)
    alpha = photo.alpha
    if pixels.dtype == np.uint16 and ext not in (".png", ".tif", ".tiff"):
        pixels = np.round(pixels / 257.0).astype(np.uint8)
        alpha = None if alpha is None else np.round(alpha / 257.0).astype(np.uint8)
    atomic_write(path, _encode(pixels, alpha, photo, ext))
