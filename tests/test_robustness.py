"""The robustness summary: seed pooling, group gains, tie/win verdicts, the promotion gate, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bdirnet.config import PromotionConfig, StudyConfig
from bdirnet.promotion import decide
from bdirnet.robustness import build, compare, load_run_reports, picture_grid, render_markdown, summarise

FAMILIES = {"motion": False, "gaussian": False, "shake": True, "defocus": True}


def eval_report(offset: float, seed_shift: float = 0.0, version: str = "1") -> dict[str, Any]:
    """An eval report whose image i of family k has PSNR 20 + k + i + offset + seed_shift (SSIM 0.5 + ...)."""
    families = {}
    for k, (family, held_out) in enumerate(FAMILIES.items()):
        images = {
            f"test/{family}/{i}": {"psnr": 20.0 + k + i + offset + seed_shift, "ssim": 0.5 + 0.01 * i} for i in range(3)
        }
        families[family] = {"held_out": held_out, "images": images}
    return {"families": families, "parameters": 1000, "seconds_per_image": 0.01, "model": {"version": version}}


def test_seeds_are_pooled_per_image_and_spread_reported() -> None:
    row = summarise([eval_report(1.0, -0.25), eval_report(1.0, +0.25)], [0, 1], "v")
    motion = row["families"]["motion"]
    assert motion["psnr"] == pytest.approx(22.0)  # images 21, 22, 23 after the seed average
    assert motion["psnr_std"] == pytest.approx(np.std([21.0, 22.0, 23.0]), abs=1e-3)
    assert motion["seed_psnr"] == [21.75, 22.25] and motion["n"] == 3
    assert row["in_family"]["seed_spread_db"] == pytest.approx(0.5)
    assert row["held_out"]["psnr"] == pytest.approx(np.mean([24.0, 25.0]))


def test_seeds_scored_on_different_pairs_is_an_error() -> None:
    other = eval_report(0.0)
    other["families"]["motion"]["images"] = {"x": {"psnr": 1.0, "ssim": 0.1}}
    with pytest.raises(ValueError, match="v: motion: seeds were scored on different test pairs"):
        summarise([eval_report(0.0), other], [0, 1], "v")


def test_build_gains_gaps_and_verdicts() -> None:
    study = StudyConfig(variants=("bdirnet", "transfer", "transfer_residual"), seeds=(0, 1))
    runs = {
        "bdirnet": [eval_report(1.0, -0.1), eval_report(1.0, 0.1)],
        "transfer": [eval_report(0.0, -0.1), eval_report(0.0, 0.1)],
        "transfer_residual": [eval_report(0.9, -0.3), eval_report(0.9, 0.3)],
    }
    report = build(runs, {"blurred": eval_report(-2.0)}, study, ("shake", "defocus"))
    variants = report["variants"]
    assert list(variants) == ["bdirnet", "transfer", "transfer_residual", "blurred"]
    assert variants["bdirnet"]["in_family"]["gain_db"] == pytest.approx(3.0)
    assert variants["blurred"]["held_out"]["gain_db"] == 0.0 and variants["blurred"]["seeds"] == []
    assert variants["bdirnet"]["held_out_minus_in_family_db"] == pytest.approx(2.0)
    assert report["comparisons"]["bdirnet_vs_transfer"]["held_out"]["verdict"] == "win"
    assert report["comparisons"]["bdirnet_vs_transfer_residual"]["held_out"]["verdict"] == "tie"  # 0.1 < 0.6
    markdown = render_markdown(
        report | {"promotion": {"candidate": "c", "champion_before": None, "decision": "d"}}, "T"
    )
    assert (
        "| bdirnet | 22.00 ± 0.82" in markdown
        and "| bdirnet_vs_transfer_residual | held_out | +0.10 | 0.60 | tie |" in markdown
    )
    with pytest.raises(ValueError, match="no 'blurred' method"):
        build(runs, {}, study, ("shake", "defocus"))


def test_compare_loss() -> None:
    variants = {
        name: {"in_family": {"psnr": p, "seed_spread_db": 0.1}} for name, p in (("bdirnet", 20.0), ("transfer", 21.0))
    }
    assert compare(variants, "bdirnet")["bdirnet_vs_transfer"]["in_family"]["verdict"] == "loss"


def test_gate() -> None:
    gate = PromotionConfig(min_held_out_gain_db=0.0, max_in_family_drop_db=0.2)
    champion = {"in_family": {"psnr": 30.0}, "held_out": {"psnr": 25.0}}
    assert decide({"in_family": {"psnr": 29.9}, "held_out": {"psnr": 25.5}}, champion, gate)[0] is True
    ok, why = decide({"in_family": {"psnr": 29.7}, "held_out": {"psnr": 26.0}}, champion, gate)
    assert not ok and "in-family mean -0.30 dB" in why
    assert decide({"in_family": {"psnr": 31.0}, "held_out": {"psnr": 25.0}}, champion, gate)[0] is False
    assert decide({"in_family": {"psnr": 1.0}, "held_out": {"psnr": 1.0}}, None, gate) == (
        True,
        "promoted: no champion yet",
    )


def test_missing_run_report_named(tmp_path: Path) -> None:
    study = StudyConfig(variants=("bdirnet",), seeds=(0, 1))
    (tmp_path / "bdirnet-s0").mkdir()
    (tmp_path / "bdirnet-s0" / "eval.json").write_text(json.dumps(eval_report(0.0)))
    with pytest.raises(ValueError, match=r"bdirnet-s1/eval.json: cannot read the eval report of bdirnet seed 1"):
        load_run_reports(tmp_path, study)


def test_picture_grid_places_columns_side_by_side() -> None:
    red = np.zeros((20, 10, 3), np.uint8)
    red[..., 0] = 255
    grid = picture_grid([("a", red), ("b", np.full((20, 12, 3), 7, np.uint8))], label_px=14)
    assert grid.shape == (20 + 18, 10 + 2 + 12, 3)
    assert (grid[18:, :10, 0] == 255).all() and (grid[18:, 12:, :] == 7).all()
