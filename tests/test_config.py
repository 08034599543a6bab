from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bdirnet.config import ConfigError, LossConfig, ModelConfig, TrainConfig, load_params, load_variant, to_dict

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestLoadParams:
    def test_repo_params_load(self) -> None:
        for section in ("model", "degrade", "train", "ingest", "pairs"):
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
                            "none_share": 0.0,
                            "train_family_weights": [],
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


class TestLoadVariant:
    def params(self) -> dict[str, object]:
        """params.yaml with the full study's variants (params.full.yaml: the foils and ablations too)."""
        data: dict[str, object] = yaml.safe_load((REPO / "params.yaml").read_text())
        data["study"] |= yaml.safe_load((REPO / "params.full.yaml").read_text())["study"]  # type: ignore[operator]
        return data

    def test_every_repo_variant_loads(self) -> None:
        study = load_params("study", REPO / "params.yaml")
        for variant in study.variants:
            model, train = load_variant(REPO / "params.yaml", variant, study.seeds[-1])
            assert train.run_name == variant and train.seed == study.seeds[-1]
            assert model.width_channels == load_params("model", REPO / "params.yaml").width_channels

    def test_transfer_overrides(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.params())
        model, train = load_variant(path, "transfer", 0)
        assert (model.said, model.sair, model.global_residual) == (False, False, False)
        assert train.loss.latent_weight == 0.0 and train.loss.autoencode_weight == 0.0
        assert train.loss.latent_loss == load_params("train", REPO / "params.yaml").loss.latent_loss  # the rest kept
        residual, _ = load_variant(REPO / "params.yaml", "transfer_residual", 0)
        assert residual.global_residual is True

    def test_unknown_variant_and_seed(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.params())
        with pytest.raises(ConfigError, match=r"params.yaml: variant 'nope' is not in study.variants"):
            load_variant(path, "nope", 0)
        with pytest.raises(ConfigError, match=r"params.yaml: seed 7 is not in study.seeds"):
            load_variant(path, "bdirnet", 7)

    def test_bad_override_named(self, tmp_path: Path) -> None:
        data = self.params()
        data["variants"]["transfer"] = {"model": {"sadi": False}}  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"variants.transfer over model: unknown key.*'sadi'"):
            load_variant(write(tmp_path, data), "transfer", 0)
        data["variants"]["transfer"] = {"optimizer": {}}  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"variants.transfer: unknown key.*'optimizer'"):
            load_variant(write(tmp_path, data), "transfer", 0)
        del data["variants"]["transfer"]  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"variants.transfer: missing"):
            load_variant(write(tmp_path, data), "transfer", 0)

    def test_study_section_checked(self, tmp_path: Path) -> None:
        data = self.params()
        data["study"]["promote_variant"] = "other"  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"promote_variant 'other' is not in study.variants"):
            load_params("study", write(tmp_path, data))


def test_quick_overrides_become_dvc_set_params(tmp_path: Path) -> None:
    from bdirnet.config import set_param_arguments

    assert set_param_arguments(REPO / "params.quick.yaml") == [
        "-S", 'study.variants=["bdirnet","transfer_residual"]', "-S", "study.seeds=[0]",
        "-S", "pairs.test_crops_per_image=1", "-S", "train.samples_per_epoch=2048", "-S", "train.max_epochs=2",
        "-S", 'evaluate.classical_methods=["blurred","wiener_oracle"]',
    ]  # fmt: skip
    path = write(tmp_path, {"model": {"said": False}, "degrade": {"train_families": ["motion", "gaussian"]}})
    assert set_param_arguments(path) == ["-S", 'degrade.train_families=["motion","gaussian"]', "-S", "model.said=false"]
    with pytest.raises(ConfigError, match=r"params.yaml: model is an empty mapping"):
        set_param_arguments(write(tmp_path, {"model": {}}))


def test_dataclass_defaults_are_the_params_yaml_values() -> None:
    """One set of defaults: a library user's ``ModelConfig()`` / ``TrainConfig()`` ... equal what the pipeline runs."""
    import yaml

    from bdirnet.config import SECTIONS, to_dict

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for section, cls in SECTIONS.items():
        if section == "study":  # the study's variant list and seeds are the pipeline's choice, not a library default
            continue
        assert to_dict(cls()) == params[section], section


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"grad_clip_norm": -1.0}, "grad_clip_norm must be >= 0"),
        ("train", {"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ("loss", {"infonce_temperature": 0.0}, "infonce_temperature must be > 0"),
        ("loss", {"charbonnier_eps": 0.0}, "charbonnier_eps must be > 0"),
        ("ingest", {"min_side_px": -5}, "min_side_px must be >= 16"),
        ("ingest", {"dataset": ".."}, "must be a folder name under data/raw/"),
        ("ingest", {"min_val_photos": -1}, "min_val_photos must be >= 0"),
        ("pairs", {"test_crop_px": 48}, "test_crop_px must be a multiple of 32"),
        ("pairs", {"val_crops_per_image": 0}, "crops per image must be >= 1"),
        ("pairs", {"min_texture": 1.5}, r"min_texture must be in \[0, 1\]"),
        ("degrade", {"train_families": ()}, "train_families must name at least one family"),
        ("degrade", {"train_families": ("motion", "motion", "gaussian")}, r"repeats \['motion'\]; draw a family"),
        ("degrade", {"train_family_weights": (2.0,)}, r"has 1 entries for 2 train_families"),
        ("degrade", {"train_family_weights": (2.0, 0.0)}, "must all be finite and > 0"),
        ("degrade", {"train_family_weights": (2.0, float("nan"))}, "must all be finite and > 0"),
        ("evaluate", {"classical_methods": ("blurred", "wiener_oracle", "lucy")}, r"unknown \['lucy'\]"),
        ("evaluate", {"classical_methods": ("blurred", "blurred", "wiener_oracle")}, "or repeated in"),
        ("evaluate", {"classical_methods": ("wiener_oracle",)}, r"must include \['blurred'\]"),
    ],
)
def test_values_out_of_range_are_refused(section: str, values: dict[str, object], message: str) -> None:
    from bdirnet.config import DegradeConfig, EvaluateConfig, IngestConfig, PairsConfig

    cls = {"train": TrainConfig, "loss": LossConfig, "ingest": IngestConfig, "degrade": DegradeConfig,
           "pairs": PairsConfig, "evaluate": EvaluateConfig}[section]  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        cls(**values)


def test_set_params_checks_keys_and_writes_null(tmp_path: Path) -> None:
    from bdirnet.config import set_param_arguments

    base = REPO / "params.yaml"
    typo = write(tmp_path, {"train": {"max_epoch": 2}})
    with pytest.raises(ConfigError, match=r"train\.max_epoch is not a key of"):
        set_param_arguments(typo, base)
    nulls = write(tmp_path, {"degrade": {"jpeg_quality_min": None}})
    assert set_param_arguments(nulls, base) == ["-S", "degrade.jpeg_quality_min=null"]


def test_non_utf8_params_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not UTF-8 text"):
        load_params("train", path)


def test_table_names_a_malformed_or_non_utf8_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bdirnet.cli import main as cli

    broken = tmp_path / "robustness.json"
    broken.write_text('{"variants": {"bdirnet": {"families": {}}}}')
    assert cli(["table", str(broken)]) == 2
    assert "robustness.json: malformed report" in capsys.readouterr().err
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert cli(["table", str(binary)]) == 2
    assert "binary.json: cannot read the report" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["quick", "full", "gpu"])
def test_overrides_files_give_valid_studies(name: str, tmp_path: Path) -> None:
    """Each study's overrides, applied to params.yaml as `dvc exp run -S` would, load every section and variant."""
    from bdirnet.config import SECTIONS, set_param_arguments

    from .e2e.conftest import merge

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = yaml.safe_load((REPO / f"params.{name}.yaml").read_text())
    assert set_param_arguments(REPO / f"params.{name}.yaml", REPO / "params.yaml")  # every key exists in params.yaml
    path = write(tmp_path, merge(base, overrides))
    for section in SECTIONS:
        load_params(section, path)
    study = load_params("study", path)
    for variant in study.variants:
        model, _ = load_variant(path, variant, study.seeds[0])
        own = base["variants"].get(variant, {}).get("model", {})  # a variant's own switches win over the overrides
        for key, value in overrides.get("model", {}).items():
            if key not in own:
                assert getattr(model, key) == value, (variant, key)
