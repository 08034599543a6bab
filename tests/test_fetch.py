"""The `fetch` stage on real archives built here: a .deb (dpkg-deb) holding photos and a Qt .rcc resource file, and
a wheel; the photos are scikit-image's. Nothing is downloaded: the archives are placed in the cache first, and the
stage runs with a PATH without apt-get and pip told to use no index, so any download attempt would fail."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from bdirnet.sources import RccError, download, load_manifest, read_rcc

ROOT = Path(__file__).resolve().parents[1]
DEB_NAME, DEB_VERSION = "testphotos", "1:2.0-1"  # an epoch: apt-get writes it as %3a in the file name
WHEEL_NAME, WHEEL_VERSION = "test-wheel", "0.1"


# --------------------------------------------------------------------------------------------- building archives
def encode(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rcc_bytes(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A Qt binary resource (``rcc --binary`` layout) of ``files`` (path -> (bytes, zlib-compressed?))."""
    tree: dict[str, dict] = {}
    for path, content in files.items():
        node = tree
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = content
    names = bytearray()
    payload = bytearray()
    nodes: list[bytes] = []
    node_size = 14 if version == 1 else 22

    def name_offset(name: str) -> int:
        offset = len(names)
        encoded = name.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(name), zlib.crc32(encoded)) + encoded)
        return offset

    # Breadth first: a directory's children are consecutive nodes; node 0 is the root.
    queue: list[tuple[str, object]] = [("", tree)]
    nodes.append(b"")
    position = 0
    next_free = 1
    while position < len(queue):
        name, item = queue[position]
        offset = name_offset(name) if position else 0
        if isinstance(item, dict):
            children = sorted(item.items())
            record = struct.pack(">IHII", offset, 0x02, len(children), next_free)
            queue.extend(children)
            nodes.extend(b"" for _ in children)
            next_free += len(children)
        else:
            content, compress = item
            blob = struct.pack(">I", len(content)) + zlib.compress(content) if compress else content
            record = struct.pack(">IHHHI", offset, 0x01 if compress else 0, 0, 0, len(payload))
            payload.extend(struct.pack(">I", len(blob)) + blob)
        nodes[position] = record + (b"\0" * 8 if version >= 2 else b"")
        assert len(nodes[position]) == node_size
        position += 1
    header = 24 if version >= 3 else 20
    tree_blob = b"".join(nodes)
    tree_offset, data_offset = header, header + len(tree_blob)
    names_offset = data_offset + len(payload)
    head = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        head += struct.pack(">I", 1)
    return head + tree_blob + bytes(payload) + bytes(names)


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    astronaut, coffee, chelsea = skdata.astronaut(), skdata.coffee(), skdata.chelsea()
    cutout = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    cutout[:200, :200, 3] = 0  # transparent corner: a cut-out
    ramp = np.linspace(100, 140, 400, dtype=np.float64)
    flat = np.repeat(np.repeat(ramp[None, :, None], 400, axis=0), 3, axis=2).astype(np.uint8)
    coffee_jpeg = encode(coffee, "JPEG", quality=90)
    return {
        "astronaut.jpg": encode(astronaut, "JPEG", quality=92),
        "coffee.jpg": coffee_jpeg,
        "chelsea.png": encode(chelsea, "PNG"),
        "truncated.jpg": coffee_jpeg[: len(coffee_jpeg) // 3],
        "cutout.png": encode(cutout, "PNG"),
        "flat.png": encode(flat, "PNG"),
        "small.png": encode(chelsea[:150, :200], "PNG"),
        "astronaut_small.jpg": encode(np.asarray(Image.fromarray(astronaut).resize((300, 300))), "JPEG"),
        "licence": b"Photos: scikit-image data, see skimage/data/README.txt\n",
    }


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]) -> dict[str, Path]:
    """A .deb (photos, excluded folder, an .rcc with nested, zlib and stored members) and a wheel."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: cannot build a real .deb")
    base = tmp_path_factory.mktemp("archives")
    root = base / "deb"
    share = root / "usr/share/testphotos"
    for relative, name in [
        ("photos/astronaut.jpg", "astronaut.jpg"),
        ("photos/truncated.jpg", "truncated.jpg"),
        ("photos/cutout.png", "cutout.png"),
        ("photos/flat.png", "flat.png"),
        ("photos/small.png", "small.png"),
        ("photos/paintings/coffee.jpg", "coffee.jpg"),  # a fine photo, but in an excluded folder
        ("photos/notes.txt", "licence"),  # not an image: ignored, not rejected
        ("copyright", "licence"),
    ]:
        (share / relative).parent.mkdir(parents=True, exist_ok=True)
        (share / relative).write_bytes(photos[name])
    rcc = rcc_bytes(
        {
            "res/images/animals/chelsea.png": (photos["chelsea.png"], True),
            "res/images/coffee.jpg": (photos["coffee.jpg"], False),
            "res/images/README": (photos["licence"], True),
            "res/other/astronaut.jpg": (photos["astronaut.jpg"], False),  # outside the include folder
        }
    )
    (share / "res.rcc").write_bytes(rcc)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        f"Package: {DEB_NAME}\nVersion: {DEB_VERSION}\nArchitecture: all\nMaintainer: Test <test@example.org>\n"
        "Description: photos for the fetch test\n"
    )
    deb = base / f"{DEB_NAME}_{DEB_VERSION.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    wheel = base / "test_wheel-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as out:
        out.writestr("test_wheel/__init__.py", "")
        out.writestr("test_wheel/data/chelsea.png", photos["chelsea.png"])
        out.writestr("test_wheel/data/blocked.jpg", photos["coffee.jpg"])
        out.writestr("test_wheel/wall/2048.jpg", photos["astronaut.jpg"])  # one picture at two sizes
        out.writestr("test_wheel/wall/1024.jpg", photos["astronaut_small.jpg"])
        out.writestr("test_wheel-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: test-wheel\nVersion: 0.1\n")
        out.writestr("test_wheel-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        out.writestr("test_wheel-0.1.dist-info/LICENSE", photos["licence"])
        out.writestr("test_wheel-0.1.dist-info/RECORD", "")
    return {"deb": deb, "wheel": wheel, "rcc": share / "res.rcc"}


MANIFEST = f"""
exclude_dirs: [paintings]
blocklist:
  - member: "{WHEEL_NAME}:*/blocked.jpg"
    reason: rights unclear
sources:
  - name: {DEB_NAME}
    kind: deb
    version: "{DEB_VERSION}"
    include: [usr/share/testphotos/photos, "usr/share/testphotos/res.rcc!res/images"]
    licence: CC0
    credits: usr/share/testphotos/copyright
  - name: {WHEEL_NAME}
    kind: wheel
    version: "{WHEEL_VERSION}"
    include: [test_wheel/data, test_wheel/wall]
    largest_per_folder: true
    licence: BSD-3-Clause
"""


def no_download_env(tmp_path: Path) -> dict[str, str]:
    """An environment where apt-get is not on PATH and pip may use no index: any download fails."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(empty), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}


def run_fetch(manifest: Path, cache: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "pipelines/fetch.py", "--manifest", str(manifest), "--cache", str(cache)]
    return subprocess.run([*command, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------------------------- tests
class TestRcc:
    @pytest.mark.parametrize("version", [1, 2, 3])
    def test_reads_nested_compressed_and_stored_members(self, version: int) -> None:
        files = {"a/b/c.bin": (b"x" * 1000, True), "a/d.bin": (b"stored", False), "e.txt": (b"", True)}
        assert dict(read_rcc(rcc_bytes(files, version))) == {path: content for path, (content, _) in files.items()}

    def test_a_corrupt_member_does_not_hide_the_others(self) -> None:
        data = bytearray(rcc_bytes({"good.bin": (b"good" * 50, False), "bad.bin": (b"bad" * 100, True)}))
        start = data.index(zlib.compress(b"bad" * 100))
        data[start + 2 : start + 12] = b"\xff" * 10
        result = dict(read_rcc(bytes(data)))
        assert result["good.bin"] == b"good" * 50
        assert isinstance(result["bad.bin"], RccError)

    def test_not_a_resource_file(self) -> None:
        with pytest.raises(RccError, match="qres"):
            list(read_rcc(b"PK\x03\x04 not a resource file at all"))


class TestFetch:
    @pytest.fixture
    def fetched(self, tmp_path: Path, archives: dict[str, Path]) -> tuple[Path, Path, Path, str]:
        manifest = tmp_path / "sources.yaml"
        manifest.write_text(MANIFEST)
        cache = tmp_path / "cache"
        cache.mkdir()
        for key in ("deb", "wheel"):
            shutil.copyfile(archives[key], cache / archives[key].name)
        out = tmp_path / "raw" / "photos"
        result = run_fetch(manifest, cache, out, no_download_env(tmp_path))
        assert result.returncode == 0, result.stderr
        return manifest, cache, out, result.stdout

    def test_extracts_the_photos_with_their_origin(
        self, fetched: tuple[Path, Path, Path, str], archives: dict[str, Path], photos: dict[str, bytes]
    ) -> None:
        _, _cache, out, stdout = fetched
        expected = {
            f"{DEB_NAME}__astronaut.jpg": ("usr/share/testphotos/photos/astronaut.jpg", None, photos["astronaut.jpg"]),
            f"{DEB_NAME}__res__animals__chelsea.png": (
                "usr/share/testphotos/res.rcc",
                "res/images/animals/chelsea.png",
                photos["chelsea.png"],
            ),
            f"{DEB_NAME}__res__coffee.jpg": (
                "usr/share/testphotos/res.rcc",
                "res/images/coffee.jpg",
                photos["coffee.jpg"],
            ),
            f"{WHEEL_NAME}__chelsea.png": ("test_wheel/data/chelsea.png", None, photos["chelsea.png"]),
            f"{WHEEL_NAME}__2048.jpg": ("test_wheel/wall/2048.jpg", None, photos["astronaut.jpg"]),
        }
        assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "SOURCES.json", "REJECTED.txt"])
        sources = json.loads((out / "SOURCES.json").read_text())
        records = {record["file"]: record for record in sources["photos"]}
        assert list(records) == sorted(records)
        for name, (path, rcc_path, content) in expected.items():
            record = records[name]
            assert (out / name).read_bytes() == content  # the original bytes, never re-encoded
            assert record["sha256"] == hashlib.sha256(content).hexdigest()
            assert record["path"] == path and record.get("rcc_path") == rcc_path
            with Image.open(io.BytesIO(content)) as image:
                assert (record["width"], record["height"]) == image.size
            package = DEB_NAME if name.startswith(DEB_NAME) else WHEEL_NAME
            assert record["package"] == package
            assert record["kind"] == ("deb" if package == DEB_NAME else "wheel")
            assert record["version"] == (DEB_VERSION if package == DEB_NAME else WHEEL_VERSION)
            assert record["licence"] == ("CC0" if package == DEB_NAME else "BSD-3-Clause")
        packages = {p["package"]: p for p in sources["packages"]}
        for key, name in (("deb", DEB_NAME), ("wheel", WHEEL_NAME)):
            assert packages[name]["sha256"] == hashlib.sha256(archives[key].read_bytes()).hexdigest()
            assert packages[name]["file"] == archives[key].name
        assert packages[DEB_NAME]["credits"] == "usr/share/testphotos/copyright"
        assert f"{DEB_NAME} {DEB_VERSION}: 3 photos kept, 5 rejected" in stdout
        assert f"{WHEEL_NAME} {WHEEL_VERSION}: 2 photos kept, 2 rejected" in stdout

    def test_quarantines_bad_members_with_reasons(self, fetched: tuple[Path, Path, Path, str]) -> None:
        _, _, out, _ = fetched
        lines = (out / "REJECTED.txt").read_text().splitlines()
        assert lines == sorted(lines)
        reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
        photos_dir = f"{DEB_NAME}:usr/share/testphotos/photos"
        assert reasons[f"{photos_dir}/truncated.jpg"].startswith("cannot decode")
        assert reasons[f"{photos_dir}/cutout.png"].startswith("transparent pixels")
        assert reasons[f"{photos_dir}/flat.png"].startswith("too smooth")
        assert reasons[f"{photos_dir}/small.png"].startswith("too small")
        assert reasons[f"{photos_dir}/paintings/coffee.jpg"] == "in an excluded folder (paintings)"
        assert reasons[f"{WHEEL_NAME}:test_wheel/data/blocked.jpg"] == "blocklisted: rights unclear"
        assert reasons[f"{WHEEL_NAME}:test_wheel/wall/1024.jpg"].startswith("a larger version of this picture is kept")
        assert len(lines) == 7  # notes.txt and the README in the .rcc are not images; res/other is not included

    def test_rerun_with_a_warm_cache_downloads_nothing_and_is_byte_identical(
        self, fetched: tuple[Path, Path, Path, str], tmp_path: Path
    ) -> None:
        manifest, cache, out, _ = fetched
        before, cache_before = folder_bytes(out), folder_bytes(cache)
        result = run_fetch(manifest, cache, out, no_download_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert folder_bytes(out) == before
        assert folder_bytes(cache) == cache_before
        assert sorted(p.name for p in out.parent.iterdir()) == ["photos"]  # no temporary sibling left behind


class TestDownload:
    def test_no_apt_get_says_how_to_bring_your_own_photos(self, tmp_path: Path) -> None:
        manifest = tmp_path / "sources.yaml"
        manifest.write_text(MANIFEST)
        result = run_fetch(manifest, tmp_path / "cache", tmp_path / "out", no_download_env(tmp_path))
        assert result.returncode == 2
        message = result.stderr.strip()
        assert message.count("\n") == 0, message  # one line
        assert f"{DEB_NAME} {DEB_VERSION}: apt-get is not available" in message
        assert "data/raw/<name>/" in message and "ingest.dataset: my_photos" in message
        assert not (tmp_path / "out").exists()

    def test_failed_wheel_download_names_package_and_version(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        manifest = tmp_path / "sources.yaml"
        manifest.write_text(MANIFEST)
        wheel = next(s for s in load_manifest(manifest).sources if s.kind == "wheel")
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", "")
        with pytest.raises(ValueError, match=f"{WHEEL_NAME} {WHEEL_VERSION}: download failed"):
            download(wheel, tmp_path / "cache")
        assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no partial file left in the cache

    def test_a_pinned_sha256_refuses_another_file(self, tmp_path: Path, archives: dict[str, Path]) -> None:
        manifest = tmp_path / "sources.yaml"
        manifest.write_text(
            MANIFEST.replace("    licence: BSD-3-Clause", "    licence: BSD-3-Clause\n    sha256: " + "0" * 64)
        )
        cache = tmp_path / "cache"
        cache.mkdir()
        shutil.copyfile(archives["wheel"], cache / archives["wheel"].name)
        wheel = next(s for s in load_manifest(manifest).sources if s.kind == "wheel")
        with pytest.raises(ValueError, match=r"sha256 .* but the manifest pins"):
            download(wheel, cache)
