"""Typed configuration: one frozen dataclass per ``params.yaml`` section.

Every section is loaded strictly: a key that is unknown or missing, or a value of the wrong type, fails at
load time with the file, the dotted key and what was expected.

Example:
    >>> from bdirnet.config import load_params
    >>> model_config = load_params("model", "params.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A params file or section that does not match its dataclass."""


BLOCKS = ("residual", "nafnet")
"""The block types :class:`ModelConfig` ``block`` may name (their classes: :data:`bdirnet.model.BLOCK_TYPES`)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of BDIRNet (``model`` section).

    Attributes:
        width_channels: channels C of the first level; level ``l`` has ``C * 2**l``.
        levels: number of encoder levels L; the input is padded to a multiple of ``2**levels``.
        encoder_blocks: residual blocks per encoder level (and in the bottleneck).
        decoder_blocks: residual blocks per decoder level.
        said: statistical anti-interference distilling after every encoder level.
        sair: statistical anti-interference reconstruction in every decoder level.
        global_residual: ``restored = blurred + D(E(blurred))``; off for BDIRNet (see DESIGN.md §1).
        arch: the registered architecture to build (:data:`bdirnet.model.ARCHITECTURES`).
        block: the block every level is built of (:data:`BLOCKS`): ``residual`` (conv3x3-GELU-conv3x3) or
            ``nafnet`` (NAFNet's LayerNorm, depthwise conv, SimpleGate and channel attention; Chen et al. 2022).
    """

    arch: str = "bdirnet"
    block: str = "residual"
    width_channels: int = 16
    levels: int = 3
    encoder_blocks: int = 1
    decoder_blocks: int = 1
    said: bool = True
    sair: bool = True
    global_residual: bool = False

    def __post_init__(self) -> None:
        if self.width_channels < 6 or self.width_channels % 2:
            # SAID/SAIR split channels in halves, and the RGB pass-through init needs 3 kept channels.
            raise ConfigError(f"model.width_channels must be an even integer >= 6, got {self.width_channels}")
        if not 1 <= self.levels <= 6:
            raise ConfigError(f"model.levels must be in 1..6, got {self.levels}")
        if self.encoder_blocks < 0 or self.decoder_blocks < 0:
            raise ConfigError("model.encoder_blocks and model.decoder_blocks must be >= 0")
        if self.block not in BLOCKS:
            raise ConfigError(f"model.block must be one of {list(BLOCKS)}, got {self.block!r}")

    @classmethod
    def transfer_baseline(cls, base: ModelConfig | None = None) -> ModelConfig:
        """The paper's foil: the same encoder-decoder with SAID, SAIR and the global residual off.

        Train it with ``latent_weight: 0`` and ``autoencode_weight: 0``. For the residual form of the foil use
        ``dataclasses.replace(ModelConfig.transfer_baseline(), global_residual=True)``.
        """
        return dataclasses.replace(base or cls(), said=False, sair=False, global_residual=False)


LatentLoss = Literal["ema_cosine", "infonce"]


@dataclass(frozen=True)
class LossConfig:
    """Weights and form of the training objective (``train.loss``).

    ``L = Charbonnier(D(E(b)), s) + autoencode_weight * Charbonnier(D(E(s)), s)
    + warmup * latent_weight * L_lat + fft_weight * FFT-L1 + multiscale_weight * L_ms``. ``L_lat``
    (``ema_cosine``) compares the levels ``latent_min_level .. levels`` (0 = the full-resolution skip, ``levels`` =
    the bottleneck only). ``L_ms`` supervises the decoder at each coarser scale (bdirnet.losses).
    """

    autoencode_weight: float = 0.0
    latent_weight: float = 0.1
    latent_loss: LatentLoss = "ema_cosine"
    latent_warmup_steps: int = 200
    latent_min_level: int = 0
    ema_momentum: float = 0.99
    infonce_temperature: float = 0.1
    fft_weight: float = 0.0
    multiscale_weight: float = 0.0
    charbonnier_eps: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("autoencode_weight", "latent_weight", "fft_weight", "multiscale_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.loss.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"train.loss.ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.latent_warmup_steps < 0:
            raise ConfigError("train.loss.latent_warmup_steps must be >= 0")
        if self.latent_min_level < 0:
            raise ConfigError(f"train.loss.latent_min_level must be >= 0, got {self.latent_min_level}")
        if self.infonce_temperature <= 0:
            raise ConfigError(f"train.loss.infonce_temperature must be > 0, got {self.infonce_temperature}")
        if self.charbonnier_eps <= 0:
            raise ConfigError(f"train.loss.charbonnier_eps must be > 0, got {self.charbonnier_eps}")


@dataclass(frozen=True)
class DegradeConfig:
    """The blur zoo as the study uses it (``degrade`` section)."""

    train_families: tuple[str, ...] = ("motion", "gaussian")
    held_out_families: tuple[str, ...] = ("shake", "defocus", "nonuniform")
    noise_sigma_max: float = 0.01
    jpeg_quality_min: int = 0
    none_share: float = 0.25  # share of training pairs that are the sharp crop plus noise only ("no blur: leave it")
    # How often each of ``train_families`` is drawn for a blurred training pair, relative to the others (same order);
    # empty: all equally often.
    train_family_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        from bdirnet.degrade import FAMILIES

        for name in (*self.train_families, *self.held_out_families):
            if name not in FAMILIES:
                raise ConfigError(f"degrade: unknown blur family {name!r}; expected one of {FAMILIES}")
        if not self.train_families:
            raise ConfigError("degrade.train_families must name at least one family")
        repeated = sorted({name for name in self.train_families if self.train_families.count(name) > 1})
        if repeated:
            raise ConfigError(
                f"degrade.train_families repeats {repeated}; draw a family more often with degrade.train_family_weights"
            )
        if self.train_family_weights:
            if len(self.train_family_weights) != len(self.train_families):
                raise ConfigError(
                    f"degrade.train_family_weights has {len(self.train_family_weights)} entries for "
                    f"{len(self.train_families)} train_families {list(self.train_families)}; give one per family or []"
                )
            if not all(math.isfinite(w) and w > 0 for w in self.train_family_weights):
                raise ConfigError(
                    f"degrade.train_family_weights must all be finite and > 0, got {list(self.train_family_weights)}"
                )
        overlap = set(self.train_families) & set(self.held_out_families)
        if overlap:
            raise ConfigError(f"degrade: families both trained on and held out: {sorted(overlap)}")
        if not 0.0 <= self.noise_sigma_max <= 0.2:
            raise ConfigError(f"degrade.noise_sigma_max must be in [0, 0.2], got {self.noise_sigma_max}")
        if not (self.jpeg_quality_min == 0 or 1 <= self.jpeg_quality_min <= 100):
            raise ConfigError("degrade.jpeg_quality_min must be 0 (no JPEG) or in 1..100")
        if not 0.0 <= self.none_share < 1.0:
            raise ConfigError(f"degrade.none_share must be in [0, 1), got {self.none_share}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the Ray Train job (``train`` section); patch size comes from the pairs.

    Training pairs are made on the fly (:mod:`bdirnet.streaming`): ``samples_per_epoch`` fresh pairs per epoch
    (over all workers), blurred by ``data_actors`` Ray Data actors while the workers train.
    """

    run_name: str = "bdirnet"
    seed: int = 0
    num_workers: int = 2
    samples_per_epoch: int = 4096
    data_actors: int = 1
    use_gpu: bool = False
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 4
    grad_clip_norm: float = 1.0
    bf16_autocast: bool = True
    channels_last: bool = True
    max_failures: int = 2  # worker-group restarts from the latest checkpoint (Ray FailureConfig); -1: no limit
    dead_leaves_share: float = 0.0  # training pairs whose sharp side is a dead leaves image (bdirnet.deadleaves)
    # Share of training pairs that are patches of real blurred/sharp pairs (bdirnet.paired), from the train parts of
    # ``paired_datasets`` (empty: every paired dataset ingested); 0: synthetic pairs only, the stream as before.
    paired_share: float = 0.0
    paired_datasets: tuple[str, ...] = ()
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if min(self.batch_size, self.max_epochs, self.num_workers, self.data_actors) < 1:
            raise ConfigError("train.batch_size, max_epochs, num_workers and data_actors must be >= 1")
        if self.samples_per_epoch < self.batch_size * self.num_workers:
            raise ConfigError(
                f"train.samples_per_epoch {self.samples_per_epoch} is less than one batch per worker "
                f"({self.batch_size} x {self.num_workers})"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.dead_leaves_share <= 1.0:
            raise ConfigError(f"train.dead_leaves_share must be in [0, 1], got {self.dead_leaves_share}")
        if not 0.0 <= self.paired_share <= 1.0:
            raise ConfigError(f"train.paired_share must be in [0, 1], got {self.paired_share}")
        if self.paired_datasets and self.paired_share == 0:
            raise ConfigError(
                f"train.paired_datasets {list(self.paired_datasets)} are named but train.paired_share is 0: "
                "set a share, or leave the list empty"
            )
        if self.max_failures < -1:
            raise ConfigError(f"train.max_failures must be >= -1 (-1: no limit), got {self.max_failures}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip_norm < 0:
            raise ConfigError(f"train.grad_clip_norm must be >= 0 (0 disables clipping), got {self.grad_clip_norm}")
        if not self.run_name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"train.run_name must be letters, digits, - or _, got {self.run_name!r}")


@dataclass(frozen=True)
class IngestConfig:
    """Which raw dataset to ingest, what a usable photo is, and the split (``ingest`` section).

    The split is by scene: near-duplicate photos are grouped by perceptual hash (:mod:`bdirnet.texture`) and
    every group goes to one split (:func:`bdirnet.datasets.assign_splits`). Ingest fails when test or val gets
    fewer than ``min_test_photos`` / ``min_val_photos`` photos (0: no check).
    """

    dataset: str = "photos"
    min_side_px: int = 128
    max_pixels: int = 40_000_000
    val_percent: int = 15
    test_percent: int = 25
    split_salt: str = "37:"
    min_test_photos: int = 60
    min_val_photos: int = 30
    eval_min_side_px: int = 256  # smaller photos cannot hold a val/test crop: they go to train

    def __post_init__(self) -> None:
        if not self.dataset or self.dataset in (".", "..") or any(c in self.dataset for c in "/\\\x00"):
            raise ConfigError(f"ingest.dataset must be a folder name under data/raw/, got {self.dataset!r}")
        if self.min_side_px < 16:
            raise ConfigError(f"ingest.min_side_px must be >= 16, got {self.min_side_px}")
        if self.max_pixels < 16 * 16:
            raise ConfigError(f"ingest.max_pixels must be >= 256, got {self.max_pixels}")
        if self.val_percent < 0 or self.test_percent < 0 or self.val_percent + self.test_percent >= 100:
            raise ConfigError("ingest.val_percent and ingest.test_percent must be >= 0 and sum to < 100")
        if self.eval_min_side_px < 16:
            raise ConfigError(f"ingest.eval_min_side_px must be >= 16, got {self.eval_min_side_px}")
        if self.min_test_photos < 0 or self.min_val_photos < 0:
            raise ConfigError("ingest.min_test_photos and ingest.min_val_photos must be >= 0 (0: no check)")


@dataclass(frozen=True)
class PairsConfig:
    """Blurred-pair synthesis (``pairs`` section); families and noise come from the ``degrade`` section.

    Train pairs are random ``patch_px`` patches made on the fly every epoch (``train`` section,
    :mod:`bdirnet.streaming`). Val and test pairs are
    up to ``*_crops_per_image`` non-overlapping ``*_crop_px`` crops per photo chosen by texture alone (share of
    textured 32 px tiles at least ``min_texture``; :func:`bdirnet.texture.textured_boxes`), each under every
    family of the zoo.
    """

    seed: int = 0
    patch_px: int = 96
    val_crop_px: int = 256
    val_crops_per_image: int = 1
    test_crop_px: int = 256
    test_crops_per_image: int = 2
    min_texture: float = 0.5
    batch_rows: int = 64
    num_actors: int = 2

    def __post_init__(self) -> None:
        if self.patch_px < 16 or self.patch_px % 16:
            raise ConfigError(f"pairs.patch_px must be a multiple of 16 (>= 16), got {self.patch_px}")
        for name in ("val_crop_px", "test_crop_px"):
            if getattr(self, name) < 32 or getattr(self, name) % 32:
                # 32: the tile of the texture map (bdirnet.texture.TILE_PX), itself a multiple of 2**levels.
                raise ConfigError(f"pairs.{name} must be a multiple of 32 (>= 32), got {getattr(self, name)}")
        if min(self.val_crops_per_image, self.test_crops_per_image) < 1:
            raise ConfigError("pairs: crops per image must be >= 1")
        if not 0.0 <= self.min_texture <= 1.0:
            raise ConfigError(f"pairs.min_texture must be in [0, 1] (share of textured tiles), got {self.min_texture}")
        if self.batch_rows < 1 or self.num_actors < 1:
            raise ConfigError("pairs.batch_rows and pairs.num_actors must be >= 1")


CLASSICAL_METHODS: tuple[str, ...] = ("blurred", "wiener_oracle", "richardson_lucy")
"""The classical references of the ``classical`` stage (``pipelines/classical.py``, which checks its table against
these), in report order. Named here, not taken from :mod:`bdirnet.classical`: every stage loads this module, and
importing that one would make every stage depend on it (tests/test_stage_deps.py)."""
REQUIRED_CLASSICAL_METHODS: tuple[str, ...] = ("blurred", "wiener_oracle")


@dataclass(frozen=True)
class EvaluateConfig:
    """Full-resolution scoring of the paired test sets (``evaluate`` section; :mod:`bdirnet.paired_eval`), and which
    classical references the ``classical`` stage scores (:data:`CLASSICAL_METHODS`).

    Every test image is restored whole, or in ``tile_px`` tiles overlapping by ``overlap_px`` when a side is longer
    (:func:`bdirnet.deblur.restore`, the ``bdirnet deblur`` tiling); ``paired_max_images`` > 0 scores only the first
    that many test pairs of each dataset (by pair id; reported as ``n``), 0 scores them all.
    """

    tile_px: int = 2048
    overlap_px: int = 32
    paired_max_images: int = 0
    classical_methods: tuple[str, ...] = CLASSICAL_METHODS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classical_methods) - set(CLASSICAL_METHODS))
        if unknown or len(set(self.classical_methods)) != len(self.classical_methods):
            raise ConfigError(
                f"evaluate.classical_methods: unknown {unknown} or repeated in {list(self.classical_methods)}; "
                f"known are {list(CLASSICAL_METHODS)}"
            )
        needed = [m for m in REQUIRED_CLASSICAL_METHODS if m not in self.classical_methods]
        if needed:
            raise ConfigError(
                f"evaluate.classical_methods must include {needed}: the gains are measured against the blurred input "
                "and the picture grids show the Wiener oracle"
            )
        if self.tile_px < 16 or not 0 <= self.overlap_px < self.tile_px // 2:
            raise ConfigError(
                f"evaluate: need tile_px >= 16 and 0 <= overlap_px < tile_px / 2, got {self.tile_px}, {self.overlap_px}"
            )
        if self.paired_max_images < 0:
            raise ConfigError(f"evaluate.paired_max_images must be >= 0 (0: all), got {self.paired_max_images}")


@dataclass(frozen=True)
class PromotionConfig:
    """The promotion gate (``promotion`` section, applied by the ``robustness`` stage): ``champion`` moves to the
    candidate only when its held-out mean PSNR beats the champion's by more than ``min_held_out_gain_db`` and
    its in-family mean is not worse by more than ``max_in_family_drop_db`` (both on the same test pairs)."""

    min_held_out_gain_db: float = 0.0
    max_in_family_drop_db: float = 0.2

    def __post_init__(self) -> None:
        if self.max_in_family_drop_db < 0:
            raise ConfigError("promotion.max_in_family_drop_db must be >= 0")


@dataclass(frozen=True)
class StudyConfig:
    """The robustness study (``study`` section): which variants, which seeds, which variant may be promoted.

    Every variant named here needs an entry under the ``variants`` section of the same file: a mapping with
    optional ``model`` and ``train`` sub-mappings that override the base sections (``{}`` for none).
    """

    variants: tuple[str, ...] = ("bdirnet",)
    seeds: tuple[int, ...] = (0,)
    promote_variant: str = "bdirnet"
    picture_variants: tuple[str, ...] = ("bdirnet",)

    def __post_init__(self) -> None:
        if not self.variants or not self.seeds:
            raise ConfigError("study.variants and study.seeds must not be empty")
        if len(set(self.variants)) != len(self.variants) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("study.variants and study.seeds must not repeat an entry")
        for name in self.variants:
            if not name.replace("_", "").isalnum():
                raise ConfigError(f"study.variants: {name!r} must be letters, digits or _")
        if self.promote_variant not in self.variants:
            raise ConfigError(f"study.promote_variant {self.promote_variant!r} is not in study.variants")
        stray = [name for name in self.picture_variants if name not in self.variants]
        if stray:
            raise ConfigError(f"study.picture_variants {stray} are not in study.variants")


SECTIONS: dict[str, type[Any]] = {
    "study": StudyConfig,
    "promotion": PromotionConfig,
    "ingest": IngestConfig,
    "pairs": PairsConfig,
    "model": ModelConfig,
    "degrade": DegradeConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
}


def from_mapping(cls: type[ConfigT], data: object, where: str) -> ConfigT:
    """Build dataclass ``cls`` from ``data``, failing on unknown/missing keys and wrong types.

    Args:
        cls: a dataclass type.
        data: the parsed YAML value of the section.
        where: a location for messages, e.g. ``"params.yaml: train"``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected keys are {names}")
    missing = [name for name in names if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    values = {name: _coerce(hints[name], data[name], f"{where}.{name}") for name in names}
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint: Any, value: object, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_mapping(hint, value, where)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            if option is type(None) and value is None:
                return None
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, where)
        raise ConfigError(f"{where}: unsupported union type {hint}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = get_args(hint)[0]
        return tuple(_coerce(item_type, item, f"{where}[{i}]") for i, item in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Parse a params YAML file into a mapping of sections, with the file named in every error."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_params(section: str, path: str | Path = "params.yaml") -> Any:
    """Load one section of a params file into its frozen dataclass.

    Args:
        section: a key of :data:`SECTIONS`, e.g. ``"train"``.
        path: the params YAML file.

    Raises:
        ConfigError: naming the file and the key when the section is missing, has unknown or missing keys, or
            holds a value of the wrong type.
    """
    if section not in SECTIONS:
        raise ConfigError(f"unknown params section {section!r}; known sections are {sorted(SECTIONS)}")
    data = read_params_file(path)
    if section not in data:
        raise ConfigError(f"{path}: missing section {section!r}")
    return from_mapping(SECTIONS[section], data[section], f"{path}: {section}")


def _overlay(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _overlay(out[key], value)
        else:
            out[key] = value
    return out


def load_variant(path: str | Path, variant: str, seed: int) -> tuple[ModelConfig, TrainConfig]:
    """The model and train config of one study run: the base sections with ``variants.<variant>`` overlaid,
    ``train.seed`` set to ``seed`` and ``train.run_name`` to the variant name.

    Raises:
        ConfigError: naming the file and key when the variant or seed is not in ``study``, the variant has no
            entry under ``variants``, or an override key is unknown or of the wrong type.
    """
    data = read_params_file(path)
    if "study" not in data:
        raise ConfigError(f"{path}: missing section 'study'")
    study = from_mapping(StudyConfig, data["study"], f"{path}: study")
    if variant not in study.variants:
        raise ConfigError(f"{path}: variant {variant!r} is not in study.variants {list(study.variants)}")
    if seed not in study.seeds:
        raise ConfigError(f"{path}: seed {seed} is not in study.seeds {list(study.seeds)}")
    variants = data.get("variants")
    if not isinstance(variants, Mapping) or variant not in variants:
        raise ConfigError(f"{path}: variants.{variant}: missing (every study variant needs an entry, {{}} for none)")
    overrides = variants[variant] or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{path}: variants.{variant}: expected a mapping with model and/or train, got {overrides!r}")
    unknown = sorted(set(overrides) - {"model", "train"})
    if unknown:
        raise ConfigError(f"{path}: variants.{variant}: unknown key(s) {unknown}; expected model and/or train")
    for section in ("model", "train"):
        if section not in data:
            raise ConfigError(f"{path}: missing section {section!r}")
        if not isinstance(overrides.get(section, {}), Mapping):
            raise ConfigError(f"{path}: variants.{variant}.{section}: expected a mapping")
    where = f"{path}: variants.{variant} over"
    model = from_mapping(ModelConfig, _overlay(data["model"], overrides.get("model", {})), f"{where} model")
    train_data = _overlay(data["train"], overrides.get("train", {})) | {"seed": seed, "run_name": variant}
    train = from_mapping(TrainConfig, train_data, f"{where} train")
    return model, train


def set_param_arguments(path: str | Path, base: str | Path = "params.yaml") -> list[str]:
    """A YAML file of overrides (same layout as ``params.yaml``) as ``dvc exp run`` arguments:
    ``["-S", "study.seeds=[0]", "-S", "train.max_epochs=1", ...]`` (lists in Hydra's ``[a,b]`` syntax, ``null``
    for None). Every key must exist in ``base`` (a typo would otherwise add a param nobody reads)."""
    import json

    known = read_params_file(base)

    def leaves(prefix: str, value: Any, reference: Any) -> list[str]:
        if isinstance(value, Mapping):
            if not value:
                raise ConfigError(f"{path}: {prefix[:-1] or 'the file'} is an empty mapping; give leaf values")
            out = []
            for key, sub in value.items():
                if not isinstance(reference, Mapping) or key not in reference:
                    raise ConfigError(f"{path}: {prefix}{key} is not a key of {base}")
                out += leaves(f"{prefix}{key}.", sub, reference[key])
            return out
        if isinstance(value, list | bool) or value is None:
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        return ["-S", f"{prefix[:-1]}={text}"]

    return leaves("", read_params_file(path), known)


def to_dict(config: object) -> dict[str, Any]:
    """A dataclass as plain nested data (tuples become lists), for logging and YAML."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{config!r} is not a dataclass instance")

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    result: dict[str, Any] = plain(dataclasses.asdict(config))
    return result
