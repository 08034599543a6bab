"""`bdirnet export`: ONNX Runtime and TorchScript match eager PyTorch at any size (odd, non-square, batched), and
`bdirnet deblur --model` runs the exported files through the same tiling and photo IO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from bdirnet import BDIRNet, ModelConfig
from bdirnet.cli import main as cli_main
from bdirnet.deblur import activation_bytes_per_pixel, load_network, restore
from bdirnet.export import ExportedNetwork, load_exported
from bdirnet.weights import save_weights

from .conftest import photo


@pytest.fixture(scope="module")
def network() -> BDIRNet:
    """A BDIRNet moved away from its identity init, so the borders depend on how the export pads (reflect)."""
    model = BDIRNet(ModelConfig(width_channels=8, levels=3)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, network: BDIRNet) -> dict[str, Path]:
    """The weights file and both exports, made by the command a user runs."""
    folder = tmp_path_factory.mktemp("export")
    weights = folder / "w.pt"
    save_weights(weights, network, {"variant": "test"})
    files = {"weights": weights, "onnx": folder / "bdirnet.onnx", "torchscript": folder / "bdirnet-ts.pt"}
    for fmt in ("onnx", "torchscript"):
        assert cli_main(["export", "--format", fmt, "--model", str(weights), "-o", str(files[fmt])]) == 0
    return files


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (1, 37, 53), (2, 80, 48)])
def test_export_matches_eager(
    exported: dict[str, Path], network: BDIRNet, fmt: str, batch: int, height: int, width: int
) -> None:
    coffee = photo("coffee")
    image = torch.cat([coffee[..., 100 + 40 * i : 100 + 40 * i + height, 200 : 200 + width] for i in range(batch)])
    runner = load_exported(exported[fmt])
    assert runner.kind == fmt
    with torch.no_grad():
        expected = network(image)
        got = runner(image)
    assert got.shape == image.shape
    assert float((expected - image).abs().mean()) > 0.02, "the perturbed network must change the image"
    assert float((got - expected).abs().max()) < 1e-4


def test_exports_carry_their_memory_figure(exported: dict[str, Path], network: BDIRNet) -> None:
    for fmt in ("onnx", "torchscript"):
        runner = load_network(str(exported[fmt]))  # a TorchScript .pt is told apart from a weights .pt
        assert isinstance(runner, ExportedNetwork) and runner.multiple == 8
        assert activation_bytes_per_pixel(runner) == pytest.approx(activation_bytes_per_pixel(network))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_deblur_runs_an_exported_model(
    tmp_path: Path, exported: dict[str, Path], fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same photo through the weights file and through the export, whole and in tiles: the same pixels."""
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()[:150, :201]).save(source)
    outputs = {}
    for name, model, tile in (("eager", exported["weights"], []), ("export", exported[fmt], []),
                              ("tiled", exported[fmt], ["--tile", "96"])):  # fmt: skip
        out = tmp_path / name
        argv = ["deblur", str(source), "--model", str(model), "-o", str(out), *tile]
        assert cli_main(argv) == 0, capsys.readouterr().err
        outputs[name] = np.asarray(Image.open(out / "cat_deblurred.png")).astype(int)
    assert np.abs(outputs["export"] - outputs["eager"]).max() <= 1  # rounding to 8 bits
    assert np.abs(outputs["tiled"] - outputs["eager"]).max() > 0  # the tiles did run (BDIRNet is not local)
    assert "96 px tiles" in capsys.readouterr().out


def test_bad_exported_files_are_named(
    tmp_path: Path, exported: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(data.chelsea()[:64, :64]).save(tmp_path / "cat.png")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    assert cli_main(["deblur", str(tmp_path / "cat.png"), "--model", str(broken), "-o", str(tmp_path)]) == 2
    assert f"{broken}: not a loadable ONNX model" in capsys.readouterr().err
    assert cli_main(["deblur", str(tmp_path / "cat.png"), "--model", str(exported["onnx"]), "--bf16"]) == 2
    assert "is an exported float32 model; drop --bf16" in capsys.readouterr().err
    assert cli_main(["export", "--model", str(exported["onnx"]), "-o", str(tmp_path / "again.onnx")]) == 2
    assert "already an exported model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs sides of at least 8 px"):
        load_exported(exported["onnx"])(torch.rand(1, 3, 5, 40))
    with pytest.raises(ValueError, match="statistics='image' needs a torch BDIRNet"):
        restore(load_exported(exported["onnx"]), torch.rand(1, 3, 64, 64), tile=32, overlap=8, statistics="image")
