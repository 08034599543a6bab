"""The real study, end to end: `dvc repro` in a temporary git repo with real Ray, MLflow (SQLite) and DVC, every
variant of params.yaml on tiny params and one seed, then `dvc exp run` resuming one run with more epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml

from bdirnet import registry
from bdirnet.degrade import FAMILIES

from .conftest import REPO, TINY_PARAMS, make_project, project_env, run

pytestmark = pytest.mark.slow

VARIANTS = yaml.safe_load((REPO / "params.yaml").read_text())["study"]["variants"]
CLASSICAL = ["blurred", "wiener_oracle", "richardson_lucy"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("e2e")
    workdir = make_project(root, TINY_PARAMS)
    env = project_env(workdir, ray_tmp)
    first = run(["dvc", "repro"], workdir, env, timeout=1500)
    robustness = json.loads((workdir / "reports/robustness.json").read_text())
    registered = {v: json.loads((workdir / f"reports/runs/{v}-s0/registered.json").read_text()) for v in VARIANTS}
    again = run(["dvc", "repro"], workdir, env)
    status = run(["dvc", "status"], workdir, env)
    # Train one run more: `dvc exp run -S` reruns its train (resuming from the checkpoint), register, evaluate.
    exp = run(["dvc", "exp", "run", "-S", "train.max_epochs=3", "evaluate@bdirnet-0"], workdir, env, timeout=900)
    return {"workdir": workdir, "first": first, "robustness": robustness, "registered": registered, "again": again,
            "status": status, "exp": exp, "uri": f"sqlite:///{workdir / 'mlflow.db'}"}  # fmt: skip


def test_report_has_every_variant_by_family_cell(study: dict[str, Any]) -> None:
    report = study["robustness"]
    assert list(report["variants"]) == VARIANTS + CLASSICAL
    held_out = TINY_PARAMS["degrade"]["held_out_families"]
    for name, row in report["variants"].items():
        assert set(row["families"]) == set(FAMILIES), name
        for family, cell in row["families"].items():
            assert cell["held_out"] is (family in held_out)
            assert cell["n"] == 3 * 4  # 3 test photos x a 2x2 grid of crops
            for key in ("psnr", "psnr_std", "ssim"):
                assert isinstance(cell[key], float) and cell[key] == cell[key], (name, family, key)
        assert row["seeds"] == ([0] if name in VARIANTS else [])
        assert (row["params"] > 0) is (name in VARIANTS)
        assert isinstance(row["held_out_minus_in_family_db"], float)
    assert report["variants"]["blurred"]["in_family"]["gain_db"] == 0.0
    assert set(report["comparisons"]) == {"bdirnet_vs_transfer", "bdirnet_vs_transfer_residual"}
    workdir = study["workdir"]
    markdown = (workdir / "reports/robustness.md").read_text()
    for name in VARIANTS + CLASSICAL:
        assert f"| {name} |" in markdown
    grids = sorted(p.name for p in (workdir / "reports/robustness").iterdir())
    assert grids == sorted([f"{f}.png" for f in FAMILIES] + ["real_clock_motion.png"])
    rows = (workdir / "reports/robustness.csv").read_text().splitlines()
    assert len(rows) == 1 + len(VARIANTS + CLASSICAL) * len(FAMILIES)


def test_each_variant_is_its_own_tagged_registered_version(study: dict[str, Any]) -> None:
    versions = {v: study["registered"][v]["version"] for v in VARIANTS}
    assert len(set(versions.values())) == len(VARIANTS)
    for variant, version in versions.items():
        tags = registry.version_tags(study["uri"], version)
        assert tags["variant"] == variant and tags["seed"] == "0"


def test_transfer_variants_are_registered_with_the_switches_off(study: dict[str, Any]) -> None:
    for variant, residual in (("transfer", "False"), ("transfer_residual", "True")):
        params = registry.version_params(study["uri"], study["registered"][variant]["version"])
        assert params["model.said"] == "False" and params["model.sair"] == "False", variant
        assert params["model.global_residual"] == residual, variant
        assert float(params["train.loss.latent_weight"]) == 0.0, variant
        assert float(params["train.loss.autoencode_weight"]) == 0.0, variant
    full = registry.version_params(study["uri"], study["registered"]["bdirnet"]["version"])
    assert full["model.said"] == "True" and full["model.sair"] == "True" and full["model.global_residual"] == "False"
    assert float(full["train.loss.latent_weight"]) > 0
    assert registry.version_params(study["uri"], study["registered"]["no_said"]["version"])["model.said"] == "False"
    assert float(registry.version_params(study["uri"], study["registered"]["no_latent"]["version"])[
        "train.loss.latent_weight"]) == 0.0  # fmt: skip


def test_first_study_promotes_the_bdirnet_run(study: dict[str, Any]) -> None:
    promotion = study["robustness"]["promotion"]
    assert promotion["promoted"] is True and promotion["decision"] == "promoted: no champion yet"
    assert promotion["candidate_version"] == study["registered"]["bdirnet"]["version"]
    client = mlflow.MlflowClient(tracking_uri=study["uri"])
    champion = client.get_model_version_by_alias("bdirnet", "champion")
    assert str(champion.version) == promotion["candidate_version"]
    runs = client.search_runs([client.get_experiment_by_name("bdirnet").experiment_id], "tags.kind = 'robustness'")
    assert len(runs) == 1
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "robustness")}
    assert "robustness/robustness.md" in artifacts and "robustness/robustness" in artifacts


def test_second_repro_is_a_no_op(study: dict[str, Any]) -> None:
    again = study["again"].stdout
    assert "Running stage" not in again, again
    assert "up to date" in study["status"].stdout.lower()


def test_exp_run_resumes_training_and_the_model_learns(study: dict[str, Any]) -> None:
    workdir = study["workdir"]
    train = json.loads((workdir / "reports/runs/bdirnet-s0/train.json").read_text())
    assert train["epochs"] == 3
    client = mlflow.MlflowClient(tracking_uri=study["uri"])
    # One MLflow run for the Ray run; epoch 0 logged once (by the first repro), epochs 1-2 by the resumed run.
    epochs = [m.value for m in client.get_metric_history(train["mlflow_run_id"], "epoch")]
    assert sorted(epochs) == [0.0, 1.0, 2.0]
    output = study["exp"].stdout + study["exp"].stderr
    assert "resuming from epoch 1" in output
    assert "train@transfer-0" not in output  # only the targeted run's chain reruns
    state = torch.load(Path(train["latest_checkpoint"]) / "state.pt", map_location="cpu", weights_only=False)
    steps = state["step"]
    assert state["epoch"] == 2 and steps > 0
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {float(steps)}, "optimizer state was not restored"
    assert state["scheduler"]["last_epoch"] == steps
    evaluated = json.loads((workdir / "reports/runs/bdirnet-s0/eval.json").read_text())
    assert evaluated["model"]["version"] == str(len(VARIANTS) + 1)
    assert evaluated["in_family"]["psnr"] > evaluated["in_family"]["blurred_psnr"], evaluated["in_family"]
