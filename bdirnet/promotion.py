"""Promotion: which study run becomes ``models:/bdirnet@champion``.

The candidate is the seed of ``study.promote_variant`` with the best *validation* PSNR (never chosen on the test
split). The gate (:func:`decide`, ``promotion`` params) compares its test group means with the current
champion's: from this study's eval reports when the champion is one of its runs, else re-scored on the same test
pairs. The registry is touched only through :mod:`bdirnet.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bdirnet import registry
from bdirnet.config import PromotionConfig, StudyConfig
from bdirnet.evaluation import evaluate_restorer, read_test_pairs, report_groups

RunReports = Mapping[str, Sequence[Mapping[str, Any]]]


def decide(
    challenger: Mapping[str, Any], champion: Mapping[str, Any] | None, gate: PromotionConfig
) -> tuple[bool, str]:
    """The promotion gate on robustness: held-out mean PSNR must beat the champion's by more than
    ``min_held_out_gain_db`` and the in-family mean may drop by at most ``max_in_family_drop_db``.
    Both arguments hold ``in_family``/``held_out`` group means with a ``psnr`` key."""
    if champion is None:
        return True, "promoted: no champion yet"
    held_gain = challenger["held_out"]["psnr"] - champion["held_out"]["psnr"]
    in_drop = champion["in_family"]["psnr"] - challenger["in_family"]["psnr"]
    ok = held_gain > gate.min_held_out_gain_db and in_drop <= gate.max_in_family_drop_db
    verdict = "promoted" if ok else "kept the champion"
    return ok, (
        f"{verdict}: held-out mean {held_gain:+.2f} dB vs champion (needs > {gate.min_held_out_gain_db:+.2f}), "
        f"in-family mean {-in_drop:+.2f} dB (may drop at most {gate.max_in_family_drop_db:.2f})"
    )


def champion_groups(
    uri: str, version: str, runs: RunReports, test_pairs_uri: str, held_out: Sequence[str]
) -> dict[str, Any]:
    """The champion's test group means: from this study's eval report when it is one of its runs, else scored."""
    for reports in runs.values():
        for report in reports:
            if report["model"]["version"] == version:
                return {group: report[group] for group in ("in_family", "held_out")}
    model = registry.load_model(uri, version)
    pairs = list(read_test_pairs(test_pairs_uri))
    with torch.no_grad():
        scores = evaluate_restorer(pairs, lambda blurred, _: model(blurred), tuple(held_out))
    return report_groups({family: s.summary() for family, s in scores.items()})


def promote(
    uri: str, runs: RunReports, study: StudyConfig, gate: PromotionConfig, test_pairs_uri: str, held_out: Sequence[str]
) -> dict[str, Any]:
    """Apply the gate and move the ``champion`` alias when it passes; returns the promotion record of the report.

    Raises:
        RegistryError: when a run's version is not on this tracking server (naming the report and the fix).
    """
    for reports in runs.values():
        for report in reports:
            where = f"eval report of {report['variant']} seed {report['seed']}"
            registry.require_version(uri, report["model"]["version"], report.get("weights_sha256"), where)
    candidate = max(runs[study.promote_variant], key=lambda r: float(r["best_val_psnr"] or float("-inf")))
    version = str(candidate["model"]["version"])
    champion_before = registry.alias_version(uri, "champion")
    if champion_before == version:
        promoted, decision = False, f"version {version} is already the champion"
    else:
        champion = None
        if champion_before is not None:
            champion = champion_groups(uri, champion_before, runs, test_pairs_uri, held_out)
        promoted, decision = decide(candidate, champion, gate)
    if promoted:
        registry.set_alias(uri, "champion", version)
    return {
        "candidate": f"{study.promote_variant} seed {candidate['seed']} (version {version}, best val PSNR "
        f"{float(candidate['best_val_psnr']):.2f} dB)",
        "candidate_version": version,
        "champion_before": champion_before,
        "champion_after": version if promoted else champion_before,
        "promoted": promoted,
        "decision": decision,
    }
