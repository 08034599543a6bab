"""`bdirnet deblur` on real photos: orientation, EXIF/ICC kept, alpha untouched, grayscale and 16-bit kept, bad files
reported while the rest are written; tiling without seams and within 0.05 dB of untiled; input guards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps
from skimage import data

from bdirnet import BDIRNet, ModelConfig
from bdirnet.cli import main as cli_main
from bdirnet.deblur import check_image, read_photo, restore, tile_for_memory, write_photo
from bdirnet.metrics import psnr
from bdirnet.weights import save_weights

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def network() -> BDIRNet:
    """A BDIRNet that is not the identity (perturbed weights), so tiling and seams are tested on a real change."""
    torch.manual_seed(3)
    model = BDIRNet(ModelConfig(width_channels=8, levels=2))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture()
def weights(tmp_path: Path, network: BDIRNet) -> Path:
    path = tmp_path / "w.pt"
    save_weights(path, network, {"variant": "test"})
    return path


def rotated_jpeg(path: Path) -> np.ndarray:
    """astronaut, stored rotated with EXIF orientation 6 (as a phone would), an artist tag and an sRGB profile."""
    upright = data.astronaut()[:200, :300]
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x013B] = "BDIRNet test"
    stored.save(path, quality=95, exif=exif.tobytes(), icc_profile=SRGB)
    return np.asarray(ImageOps.exif_transpose(Image.open(path)))


def test_orientation_applied_and_exif_icc_written_back(tmp_path: Path, network: BDIRNet) -> None:
    source = tmp_path / "phone.jpg"
    upright = rotated_jpeg(source)
    photo = read_photo(source)
    assert photo.pixels.shape == upright.shape and np.array_equal(photo.pixels, upright)
    out = tmp_path / "out.jpg"
    write_photo(out, photo, restore(network, photo.tensor()))
    written = Image.open(out)
    assert written.size == (upright.shape[1], upright.shape[0])  # upright, not rotated again by a viewer
    exif = written.getexif()
    assert exif[0x0112] == 1 and exif[0x013B] == "BDIRNet test"
    assert written.info["icc_profile"] == SRGB


@pytest.mark.parametrize(("mode", "ext"), [("RGBA", ".png"), ("LA", ".png")])
def test_alpha_passes_through_untouched(tmp_path: Path, network: BDIRNet, mode: str, ext: str) -> None:
    rgba = data.astronaut()[:96, :128]
    alpha = np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (96, 1))
    image = Image.fromarray(np.dstack([rgba, alpha]), "RGBA").convert(mode)
    source = tmp_path / f"a{ext}"
    image.save(source)
    photo = read_photo(source)
    out = tmp_path / f"out{ext}"
    write_photo(out, photo, restore(network, photo.tensor()))
    written = Image.open(out)
    assert written.mode == mode
    assert np.array_equal(np.asarray(written)[..., -1], np.asarray(image)[..., -1])
    assert not np.array_equal(np.asarray(written)[..., 0], np.asarray(image)[..., 0])  # the pixels were restored


def test_grayscale_stays_grayscale(tmp_path: Path, network: BDIRNet) -> None:
    source = tmp_path / "camera.png"
    Image.fromarray(data.camera()[:128, :160]).save(source)
    photo = read_photo(source)
    assert photo.grayscale and photo.tensor().shape == (1, 3, 128, 160)
    write_photo(tmp_path / "out.png", photo, restore(network, photo.tensor()))
    assert Image.open(tmp_path / "out.png").mode == "L"


def test_sixteen_bit_png_and_tiff_stay_sixteen_bit(tmp_path: Path, network: BDIRNet) -> None:
    import cv2
    import tifffile

    rgb16 = data.astronaut()[:64, :80].astype(np.uint16) * 257 + np.arange(80, dtype=np.uint16)[None, :, None] % 257
    gray16 = rgb16[..., 0].copy()
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    for name, expected in (("rgb16.png", rgb16), ("gray16.png", gray16[..., None]), ("rgb16.tif", rgb16)):
        photo = read_photo(tmp_path / name)
        assert photo.bit_depth == 16 and np.array_equal(photo.pixels, expected), name
        assert float(photo.tensor().max()) <= 1.0
        out = tmp_path / f"out-{name}"
        write_photo(out, photo, photo.tensor())  # the input itself: a lossless round trip
        if name.endswith(".tif"):
            back = tifffile.imread(out)
        else:
            back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
            back = back[..., ::-1] if back.ndim == 3 else back
        assert back.dtype == np.uint16 and np.array_equal(back.reshape(expected.shape), expected), name


def test_cli_reports_bad_files_and_writes_the_rest(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.chelsea()[:100, :120]).save(folder / "cat.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    code = cli_main(["deblur", str(folder), "--model", str(weights), "-o", str(out), "--ext", "png"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["cat_deblurred.png"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 2
        and any("broken.jpg" in e for e in errors)
        and any("empty.png: empty file" in e for e in errors)
    )
    assert "1 of 3 photos restored" in captured.out


def test_cli_names_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(data.chelsea()[:64, :64]).save(tmp_path / "cat.png")
    code = cli_main(["deblur", str(tmp_path / "cat.png"), "--model", str(tmp_path / "nope.pt")])
    assert code == 2 and "nope.pt: no such weights file" in capsys.readouterr().err


class LocalConvNet(torch.nn.Module):
    """A purely local network (receptive field 9 px): tiling must reproduce its whole-image output exactly. BDIRNet
    itself is not local (SAID/SAIR use per-image statistics), which bench/deblur_memory.py measures."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            *[
                torch.nn.Sequential(torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), torch.nn.GELU())
                for i in range(4)
            ],
            torch.nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, blurred: torch.Tensor) -> torch.Tensor:
        return (blurred + self.body(blurred)).clamp(0, 1)


def test_tiled_is_within_0_05_db_of_untiled() -> None:
    network = LocalConvNet().eval()
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    whole = restore(network, image)
    tiled = restore(network, image, tile=160, overlap=32)
    assert abs(float(psnr(tiled, image)[0]) - float(psnr(whole, image)[0])) < 0.05
    assert float(psnr(tiled, whole)[0]) > 60.0
    assert float(psnr(whole, image)[0]) < 40.0  # the network changes the image


def test_whole_image_statistics_make_tiles_match_untiled(network: BDIRNet) -> None:
    """BDIRNet normalises with per-image statistics: tiles with their own statistics restore visibly differently
    from the whole image; given the whole image's statistics (gathered tile by tile) they match it. An odd width
    exercises the padding to the network's multiple."""
    image = torch.from_numpy(data.astronaut()[100:292, 50:301].copy()).permute(2, 0, 1)[None].float() / 255
    whole = restore(network, image)
    own = restore(network, image, tile=96, overlap=16, statistics="tile")
    shared = restore(network, image, tile=96, overlap=16)  # auto: the whole image's statistics for a BDIRNet
    assert float(psnr(own, whole)[0]) < 40.0  # the effect is real at this size
    assert float(psnr(shared, whole)[0]) > 60.0
    assert abs(float(psnr(shared, image)[0]) - float(psnr(whole, image)[0])) < 0.05


def test_whole_image_statistics_reach_nafnet_channel_attention() -> None:
    """NAFNet blocks scale channels by their spatial mean (channel attention): with SAID/SAIR off they are the only
    per-image statistics, and tiles given the whole image's match the whole-image restoration."""
    torch.manual_seed(4)
    network = BDIRNet(ModelConfig(width_channels=8, levels=2, block="nafnet", said=False, sair=False))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    network.eval()
    image = torch.from_numpy(data.astronaut()[100:292, 50:301].copy()).permute(2, 0, 1)[None].float() / 255
    whole = restore(network, image)
    own = restore(network, image, tile=96, overlap=16, statistics="tile")
    shared = restore(network, image, tile=96, overlap=16, statistics="image")
    assert float(psnr(own, whole)[0]) < 45.0  # the tiles' own means change the result
    assert float(psnr(shared, whole)[0]) > 60.0


def test_no_seam_on_a_smooth_gradient(network: BDIRNet) -> None:
    """The largest horizontal step at tile borders is no larger than the largest step elsewhere."""
    ramp = torch.linspace(0.1, 0.9, 320)
    image = torch.stack(
        [ramp[None, :].expand(160, 320), ramp.flip(0)[None, :].expand(160, 320), 0.5 * torch.ones(160, 320)]
    )[None]
    tile, overlap = 96, 32
    restored = restore(network, image.contiguous(), tile=tile, overlap=overlap)
    steps = (restored[..., 1:] - restored[..., :-1]).abs().amax(dim=(0, 1, 2))  # per column boundary
    starts = [s for s in range(0, 320 - tile, tile - overlap)] + [320 - tile]
    borders = {s + k - 1 for s in starts[1:] for k in range(overlap + 1)} | {s + tile - 1 for s in starts[:-1]}
    at_borders = max(float(steps[b]) for b in borders if 0 <= b < 319)
    elsewhere = max(float(steps[c]) for c in range(8, 311) if c not in borders)
    assert at_borders <= elsewhere + 1e-4, (at_borders, elsewhere)


def test_input_guards_name_the_problem(network: BDIRNet) -> None:
    image = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_image(torch.where(image > 0.99, torch.nan, image))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\].*divide by 255"):
        check_image(image * 255)
    with pytest.raises(ValueError, match=r"got dtype torch\.uint8; convert with"):
        restore(network, (image * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"expected one RGB image of shape \(1, 3, H, W\)"):
        restore(network, torch.rand(3, 32, 32))


def test_automatic_tile_fits_the_budget(network: BDIRNet) -> None:
    assert tile_for_memory(network, 256, 256, 8 * 2**30) is None  # fits whole
    tile = tile_for_memory(network, 3000, 4000, 2 * 2**30)
    assert tile is not None and 64 <= tile < 3000 and tile % 32 == 0
    with pytest.raises(ValueError, match="too small"):
        tile_for_memory(network, 3000, 4000, 300 * 2**20)


def test_outputs_get_normal_permissions(tmp_path: Path, network: BDIRNet) -> None:
    import os

    Image.fromarray(data.chelsea()[:64, :64]).save(tmp_path / "cat.png")
    photo = read_photo(tmp_path / "cat.png")
    write_photo(tmp_path / "out.png", photo, photo.tensor())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
