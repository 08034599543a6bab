"""The robustness study's summary: every learned variant (over its seeds) and every classical reference, per blur
family, with the in-family / held-out groups, the seed spread, the BDIRNet-vs-foil comparisons, the picture
grids and the promotion gate.

Aggregation: a variant's per-image PSNR/SSIM is first averaged over its seeds (every seed scores the same test
pairs), then the family mean and the standard deviation over images are taken; ``seed_psnr`` keeps each seed's
own family mean, and a group's ``seed_spread_db`` is max - min of its per-seed group means. A difference smaller
than the larger seed spread of the two sides is a tie, not a win.

Real pairs: every paired dataset the runs were scored on (``datasets`` of the eval reports, whole images, each with
its published protocol: :mod:`bdirnet.paired_eval`) is one more column, next to the synthetic families, in the same
seed-averaged way; the ``blurred`` row takes the blurred inputs' scores from the runs. The classical references are
not run on real pairs (their oracles need the true kernel), so their cells stay empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bdirnet.config import StudyConfig
from bdirnet.images import read_png, save_png
from bdirnet.metrics import GROUPS, METRICS, group_means, rounded, row_group

FOILS = ("transfer", "transfer_residual")
CLASSICAL_NOTES = {
    "blurred": "the blurred input",
    "wiener_oracle": "Wiener with the true kernel: an oracle upper bound for the uniform families, not blind",
    "richardson_lucy": "Richardson-Lucy (scikit-image, 30 iterations) with the true kernel: an oracle, not blind",
}


def run_dir(runs_root: Path, variant: str, seed: int) -> Path:
    """Where the train/register/evaluate stages of one study run write (``<variant>-s<seed>``)."""
    return runs_root / f"{variant}-s{seed}"


def load_run_reports(runs_root: Path, study: StudyConfig) -> dict[str, list[dict[str, Any]]]:
    """variant -> the eval reports of its seeds, in ``study.seeds`` order; a missing or broken one is an error."""
    out: dict[str, list[dict[str, Any]]] = {}
    for variant in study.variants:
        for seed in study.seeds:
            path = run_dir(runs_root, variant, seed) / "eval.json"
            try:
                report = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{path}: cannot read the eval report of {variant} seed {seed} ({error})") from None
            if "families" not in report:
                raise ValueError(f"{path}: not an eval report (no 'families')")
            out.setdefault(variant, []).append(report)
    return out


def _family_row(per_seed: Sequence[Mapping[str, Any]], where: str) -> dict[str, Any]:
    """One family of one method: per-image values of every metric averaged over seeds, then mean/std over images."""
    ids = sorted(per_seed[0]["images"])
    for row in per_seed[1:]:
        if sorted(row["images"]) != ids:
            raise ValueError(f"{where}: seeds were scored on different test pairs")
    out: dict[str, Any] = {"held_out": bool(per_seed[0]["held_out"]), "group": row_group(per_seed[0]), "n": len(ids)}
    seed_means: dict[str, list[float]] = {}
    for name in METRICS:
        try:
            values = np.array([[row["images"][i][name] for i in ids] for row in per_seed], dtype=np.float64)  # (S, N)
        except (KeyError, TypeError):
            raise ValueError(
                f"{where}: per-image scores without {name!r} (an eval report of an older format?)"
            ) from None
        per_image = values.mean(axis=0)
        out[name] = rounded(name, per_image.mean())
        out[f"{name}_std"] = rounded(name, per_image.std())
        seed_means[name] = [rounded(name, v) for v in values.mean(axis=1)]
    out["seed_psnr"] = seed_means["psnr"]
    return out


def _dataset_row(per_seed: Sequence[Mapping[str, Any]], where: str, prefix: str = "") -> dict[str, Any]:
    """One paired dataset of one variant: its headline PSNR/SSIM per image averaged over seeds, then mean and std
    over images; ``prefix="blurred_"`` gives the blurred input's."""
    first = per_seed[0]
    ids = sorted(first["images"])
    if any(sorted(row["images"]) != ids for row in per_seed[1:]):
        raise ValueError(f"{where}: seeds were scored on different test pairs")
    out: dict[str, Any] = {"protocol": first["protocol"], "headline": list(first["headline"]), "n": len(ids)}
    for label, name in zip(("psnr", "ssim"), first["headline"], strict=True):
        try:
            values = np.array([[row["images"][i][prefix + name] for i in ids] for row in per_seed], dtype=np.float64)
        except (KeyError, TypeError):
            raise ValueError(f"{where}: per-image scores without {prefix + name!r}") from None
        per_image = values.mean(axis=0)
        out[label] = rounded(label, per_image.mean())
        out[f"{label}_std"] = rounded(label, per_image.std())
        if label == "psnr":
            out["seed_psnr"] = [rounded("psnr", v) for v in values.mean(axis=1)]
    return out


def summarise_datasets(reports: Sequence[Mapping[str, Any]], where: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every paired dataset of a variant's eval reports (the same in every seed's report, else an error)."""
    names = list(reports[0].get("datasets", {}))
    for report in reports[1:]:
        if list(report.get("datasets", {})) != names:
            raise ValueError(f"{where}: seeds were scored on different paired datasets")
    return {name: _dataset_row([r["datasets"][name] for r in reports], f"{where}: {name}", prefix) for name in names}


def summarise(reports: Sequence[Mapping[str, Any]], seeds: Sequence[int], where: str) -> dict[str, Any]:
    """One variant (its seeds' eval reports) or one classical method (a single report, ``seeds=[]``)."""
    families = {
        family: _family_row([r["families"][family] for r in reports], f"{where}: {family}")
        for family in reports[0]["families"]
    }
    groups: dict[str, Any] = group_means(families, list(METRICS))
    for group in GROUPS:
        if group not in groups:
            continue
        seed_means = np.mean([row["seed_psnr"] for row in families.values() if row_group(row) == group], axis=0)
        groups[group] |= {
            "seed_psnr": [rounded("psnr", v) for v in seed_means],
            "seed_spread_db": rounded("psnr", seed_means.max() - seed_means.min()),
        }
    return {
        "params": int(reports[0].get("parameters", 0)),
        "seconds_per_image": round(float(np.mean([r["seconds_per_image"] for r in reports])), 5),
        "seeds": list(seeds),
        "versions": [r["model"]["version"] for r in reports if "model" in r],
        "families": families,
        "datasets": summarise_datasets(reports, where),
        **groups,
    }


def build(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    classical: Mapping[str, Mapping[str, Any]],
    study: StudyConfig,
    held_out_families: Sequence[str],
) -> dict[str, Any]:
    """The machine-readable report: ``variants`` (learned and classical), gains, gaps and comparisons."""
    variants: dict[str, Any] = {}
    for name, reports in runs.items():
        variants[name] = summarise(reports, study.seeds, name) | {"kind": "learned"}
    for name, report in classical.items():
        variants[name] = summarise([report], [], name) | {"kind": "classical", "note": CLASSICAL_NOTES.get(name, "")}
    if "blurred" not in variants:
        raise ValueError("the classical report has no 'blurred' method: the gains need the blurred input")
    blurred = variants["blurred"]
    if runs:  # the blurred input on the real pairs: scored with every run, the same images
        first = next(iter(runs.values()))
        blurred["datasets"] = summarise_datasets(first[:1], "blurred", prefix="blurred_")
    for row in variants.values():
        for group in GROUPS:
            if group in row:
                row[group]["gain_db"] = rounded("psnr", row[group]["psnr"] - blurred[group]["psnr"])
        if "in_family" in row and "held_out" in row:
            row["held_out_minus_in_family_db"] = rounded("psnr", row["held_out"]["psnr"] - row["in_family"]["psnr"])
            row["held_out_minus_in_family_gain_db"] = rounded(
                "psnr", row["held_out"]["gain_db"] - row["in_family"]["gain_db"]
            )
    return {
        "seeds": list(study.seeds),
        "held_out_families": list(held_out_families),
        "variants": variants,
        "comparisons": compare(variants, study.promote_variant),
    }


def compare(variants: Mapping[str, Any], ours: str) -> dict[str, Any]:
    """``ours`` against each foil per group: the difference, the noise (larger seed spread), and a verdict."""
    out: dict[str, Any] = {}
    if ours not in variants:
        return out
    for foil in FOILS:
        if foil not in variants:
            continue
        entry: dict[str, Any] = {}
        for group in GROUPS:
            if group not in variants[ours]:
                continue
            diff = variants[ours][group]["psnr"] - variants[foil][group]["psnr"]
            noise = max(variants[ours][group]["seed_spread_db"], variants[foil][group]["seed_spread_db"])
            verdict = "tie" if abs(diff) <= noise else ("win" if diff > 0 else "loss")
            entry[group] = {
                "diff_db": rounded("psnr", diff),
                "seed_spread_db": rounded("psnr", noise),
                "verdict": verdict,
            }
        out[f"{ours}_vs_{foil}"] = entry
    return out


def _pm(row: Mapping[str, Any], key: str = "psnr", digits: int = 2) -> str:
    return f"{row[key]:.{digits}f} ± {row[key + '_std']:.{digits}f}"


def _datasets(variants: Mapping[str, Any]) -> dict[str, str]:
    """The paired datasets of a report (dataset -> protocol), in the order of the first variant that has them."""
    out: dict[str, str] = {}
    for row in variants.values():
        for name, cell in row.get("datasets", {}).items():
            out.setdefault(name, cell["protocol"])
    return out


def _dataset_cells(
    row: Mapping[str, Any], datasets: Mapping[str, str], key: str = "psnr", digits: int = 2
) -> list[str]:
    return [_pm(row["datasets"][d], key, digits) if d in row.get("datasets", {}) else "—" for d in datasets]


def render_markdown(report: Mapping[str, Any], title: str) -> str:
    """``reports/robustness.md``: the variant × family matrix, the groups, the comparisons, costs, pictures (and
    the promotion, when the report has one)."""
    variants = report["variants"]
    promotion = report.get("promotion", {"candidate": "—", "champion_before": None, "decision": "not applied"})
    families = list(next(iter(variants.values()))["families"])
    held = set(report["held_out_families"])
    heads = [f"{f} ({'held-out' if f in held else 'no blur' if f == 'none' else 'in-family'})" for f in families]
    datasets = _datasets(variants)
    heads += [f"{d} (real, {datasets[d]})" for d in datasets]
    no_blur = all("no_blur" in row for row in variants.values())
    lines = [f"# {title}", ""]
    lines += [
        f"Seeds per learned variant: {report['seeds']}. PSNR (dB) and SSIM are mean ± std over test images",
        "(each image's value first averaged over seeds); held-out families were never seen in training. The Wiener and",
        "Richardson-Lucy rows use the *true* kernel of every pair: oracle upper bounds, not blind methods.",
        "",
        "## PSNR, variant × blur family",
        "",
        "| variant | "
        + " | ".join(heads)
        + " | in-family | held-out | held-out − in-family (gain) |"
        + (" no blur |" if no_blur else ""),
        "|---|" + "---|" * (len(families) + len(datasets) + 3 + no_blur),
    ]
    for name, row in variants.items():
        cells = [_pm(row["families"][f]) for f in families] + _dataset_cells(row, datasets)
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {row['in_family']['psnr']:.2f} ({row['in_family']['gain_db']:+.2f})"
            + f" | {row['held_out']['psnr']:.2f} ({row['held_out']['gain_db']:+.2f})"
            + f" | {row['held_out_minus_in_family_gain_db']:+.2f} |"
            + (f" {row['no_blur']['psnr']:.2f} ({row['no_blur']['gain_db']:+.2f}) |" if no_blur else "")
        )  # fmt: skip
    lines += ["", "Group cells: mean PSNR (gain over the blurred input). `none`: the sharp crop with sensor noise"]
    lines += ["only; a network that does no harm keeps it (gain ≈ 0)."]
    if datasets:
        lines += [
            "Real columns: the test pairs of a paired dataset, whole images, scored with its published protocol",
            "(`gopro_hide`: PSNR on 8-bit RGB, MATLAB SSIM; `realblur`: ECC-aligned, masked; `kohler`: best frame;",
            "`generic`: our PSNR/SSIM); not in the groups. Classical oracles need the true kernel: not run on them.",
        ]
    lines += ["", "## SSIM, variant × blur family", ""]
    lines += ["| variant | " + " | ".join(heads) + " | in-family | held-out |",
              "|---|" + "---|" * (len(families) + len(datasets) + 2)]  # fmt: skip
    for name, row in variants.items():
        cells = [_pm(row["families"][f], "ssim", 3) for f in families] + _dataset_cells(row, datasets, "ssim", 3)
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {row['in_family']['ssim']:.3f} | {row['held_out']['ssim']:.3f} |"
        )
    lines += [
        "",
        "## Seeds, cost",
        "",
        "| variant | seeds | in-family per seed | held-out per seed | spread (in / held-out) | parameters "
        "| ms per image |",
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for name, row in variants.items():
        per_seed = [" / ".join(f"{v:.2f}" for v in row[g]["seed_psnr"]) or "—" for g in ("in_family", "held_out")]
        spread = f"{row['in_family']['seed_spread_db']:.2f} / {row['held_out']['seed_spread_db']:.2f}"
        lines.append(
            f"| {name} | {row['seeds'] or '—'} | {per_seed[0]} | {per_seed[1]} | {spread} | {row['params']:,} "
            f"| {1000 * row['seconds_per_image']:.1f} |"
        )  # fmt: skip
    lines += ["", "## BDIRNet against the transfer networks", ""]
    lines += ["| comparison | group | difference (dB) | seed spread (dB) | verdict |", "|---|---|---|---|---|"]
    for name, groups in report["comparisons"].items():
        for group, entry in groups.items():
            lines.append(
                f"| {name} | {group} | {entry['diff_db']:+.2f} | {entry['seed_spread_db']:.2f} | {entry['verdict']} |"
            )
    lines += ["", "A difference within the larger seed spread of the two sides is a tie.", "", "## Promotion", ""]
    lines += [f"- candidate: {promotion['candidate']}", f"- champion before: {promotion['champion_before']}"]
    lines += [f"- {promotion['decision']}", "", "## Pictures", ""]
    lines += [f"![{f}](robustness/{f}.png)" for f in families]
    lines += ["", "Real motion blur (scikit-image `clock_motion.png`, no ground truth):", ""]
    lines += [f"![{name}](robustness/{name}.png)" for name in promotion.get("real_grids", [])]
    return "\n".join(lines) + "\n"


def format_matrix(report: Mapping[str, Any]) -> str:
    """The PSNR matrix for the console: one row per variant, one column per family, then the group gains."""
    variants = report["variants"]
    families = list(next(iter(variants.values()))["families"])
    held = set(report["held_out_families"])
    heads = [f"{f[:10]}{'*' if f in held else ''}" for f in families]
    datasets = list(_datasets(variants))
    heads += [f"{d[:9]}(r)" for d in datasets]
    shown = [g for g in ("in_family", "held_out", "no_blur") if all(g in row for row in variants.values())]
    titles = {"in_family": "in-family", "held_out": "held-out*", "no_blur": "no blur"}
    lines = [f"{'PSNR dB':<18}" + "".join(f"{h:>12}" for h in heads) + "".join(f"{titles[g]:>11}" for g in shown)]
    for name, row in variants.items():
        cells = "".join(f"{row['families'][f]['psnr']:>12.2f}" for f in families)
        cells += "".join(f"{row['datasets'][d]['psnr']:>12.2f}" if d in row.get("datasets", {}) else f"{'—':>12}"
                         for d in datasets)  # fmt: skip
        groups = "".join(f"{row[g]['gain_db']:>+11.2f}" for g in shown)
        lines.append(f"{name:<18}{cells}{groups}")
    lines.append(
        "* held out; (r): a paired dataset's real test pairs, whole images, its protocol's PSNR; group columns: "
        "gain over the blurred input (dB)"
    )
    return "\n".join(lines)


def picture_grid(columns: Sequence[tuple[str, np.ndarray]], label_px: int = 14) -> np.ndarray:
    """Images side by side (same height), each under a text label, as one (H + label, sum W, 3) uint8 array."""
    from PIL import Image, ImageDraw

    height = max(image.shape[0] for _, image in columns)
    width = sum(image.shape[1] for _, image in columns) + 2 * (len(columns) - 1)
    canvas = Image.new("RGB", (width, height + label_px + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    left = 0
    for label, image in columns:
        canvas.paste(Image.fromarray(image), (left, label_px + 4))
        draw.text((left + 2, 1), label, fill=(0, 0, 0))
        left += image.shape[1] + 2
    return np.asarray(canvas)


def draw_pictures(
    runs_root: Path,
    classical_images: Path,
    out_dir: Path,
    study: StudyConfig,
    families: Sequence[str],
) -> list[str]:
    """The picture grids: per family, blurred | picture variants (first seed) | Wiener oracle | sharp; per real
    blurred photo, blurred | every variant. Writes ``out_dir/<family>.png`` and ``out_dir/real_<name>.png``; returns
    the real photos' grid names."""
    first_seed = study.seeds[0]
    for family in families:
        columns = [("blurred", read_png(classical_images / "blurred" / f"{family}.png"))]
        for variant in study.picture_variants:
            columns.append((variant, read_png(run_dir(runs_root, variant, first_seed) / "images" / f"{family}.png")))
        columns.append(("wiener (oracle)", read_png(classical_images / "wiener_oracle" / f"{family}.png")))
        columns.append(("sharp", read_png(classical_images / "sharp" / f"{family}.png")))
        save_png(picture_grid(columns), out_dir / f"{family}.png")
    real_grids = []
    for photo in sorted((classical_images / "blurred").glob("real_*.png")):
        columns = [("blurred (real)", read_png(photo))]
        for variant in study.variants:
            columns.append((variant, read_png(run_dir(runs_root, variant, first_seed) / "images" / photo.name)))
        save_png(picture_grid(columns), out_dir / photo.name)
        real_grids.append(photo.stem)
    return real_grids


def check_same_pictures(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], classical: Mapping[str, Any], where: str
) -> None:
    """The study runs and the classical references must show the same picture crops."""
    picture_ids = {r["pictures"][f] for reports in runs.values() for r in reports for f in r["pictures"]}
    classical_ids = {pid for method in classical.values() for pid in method["pictures"].values()}
    if picture_ids != classical_ids:
        raise ValueError(f"{where}: picture crops differ from the study runs' (rerun the classical stage)")


def write_plots_csv(report: Mapping[str, Any], path: Path) -> None:
    """``reports/robustness.csv`` (DVC plots): one row per variant × family cell."""
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "variant", "family", "held_out", "psnr", "psnr_std", "ssim"])
        for name, row in report["variants"].items():
            for family, cell in row["families"].items():
                writer.writerow([f"{family} / {name}", name, family, cell["held_out"], cell["psnr"],
                                 cell["psnr_std"], cell["ssim"]])  # fmt: skip
            for dataset, cell in row.get("datasets", {}).items():  # real pairs: held out of training's zoo
                writer.writerow([f"{dataset} (real) / {name}", name, f"{dataset} (real)", "real", cell["psnr"],
                                 cell["psnr_std"], cell["ssim"]])  # fmt: skip
