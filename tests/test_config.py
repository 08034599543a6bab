from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bdirnet.config import ConfigError, LossConfig, ModelConfig, TrainConfig, load_params, to_dict

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestLoadParams:
    def test_repo_params_load(self) -> None:
        for section in ("model", "degrade", "train"):
            load_params(section, REPO / "params.yaml")

    def test_round_trip(self, tmp_path: Path) -> None:
        config = TrainConfig(loss=LossConfig(latent_loss="infonce"))
        path = write(tmp_path, {"train": to_dict(config)})
        assert load_params("train", path) == config

    def test_unknown_key_named(self, tmp_path: Path) -> None:
        model = to_dict(ModelConfig()) | {"widht": 3}
        with pytest.raises(ConfigError, match=r"params.yaml: model.*unknown key.*'widht'"):
            load_params("model", write(tmp_path, {"model": model}))

    def test_missing_key_named(self, tmp_path: Path) -> None:
        train = to_dict(TrainConfig())
        del train["loss"]["ema_momentum"]
        with pytest.raises(ConfigError, match=r"train.loss: missing key.*'ema_momentum'"):
            load_params("train", write(tmp_path, {"train": train}))

    def test_wrong_type_named(self, tmp_path: Path) -> None:
        model = to_dict(ModelConfig()) | {"said": "yes"}
        with pytest.raises(ConfigError, match=r"model.said: expected true or false"):
            load_params("model", write(tmp_path, {"model": model}))

    def test_bad_literal(self, tmp_path: Path) -> None:
        train = to_dict(TrainConfig())
        train["loss"]["latent_loss"] = "l1"
        with pytest.raises(ConfigError, match=r"latent_loss: 'l1' is not one of"):
            load_params("train", write(tmp_path, {"train": train}))

    def test_missing_section_and_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="missing section 'model'"):
            load_params("model", write(tmp_path, {"train": to_dict(TrainConfig())}))
        with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
            load_params("model", tmp_path / "nope.yaml")

    def test_unknown_family(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="unknown blur family 'zoom'"):
            load_params(
                "degrade",
                write(
                    tmp_path,
                    {
                        "degrade": {
                            "train_families": ["zoom"],
                            "held_out_families": [],
                            "noise_sigma_max": 0.0,
                            "jpeg_quality_min": 0,
                        }
                    },
                ),
            )

    def test_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            ModelConfig().said = False  # type: ignore[misc]

    def test_transfer_baseline(self) -> None:
        base = ModelConfig(width_channels=32)
        baseline = ModelConfig.transfer_baseline(base)
        assert (baseline.said, baseline.sair, baseline.global_residual) == (False, False, False)
        assert baseline.width_channels == 32
        assert ModelConfig.transfer_baseline().width_channels == ModelConfig().width_channels
