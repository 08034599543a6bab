"""The README's run command, end to end, the way a new user meets it: a real `git clone` of this repository at
HEAD (committed dvc.lock and all) with tiny params, then `bash scripts/study.sh` with real Ray, MLflow (SQLite)
and DVC. Then the three ways in: a repro right after is a no-op; a second clone that `dvc pull`s the finished
study from a shared DVC remote retrains nothing and re-registers every run into its empty tracking store; and
`dvc exp run` resumes one run with more epochs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml

from bdirnet import registry
from bdirnet.degrade import FAMILIES
from bdirnet.weights import file_sha256, load_weights

from .conftest import REPO, TINY_PARAMS, clone_env, clone_project, run

pytestmark = pytest.mark.slow

VARIANTS = yaml.safe_load((REPO / "params.yaml").read_text())["study"]["variants"]
CLASSICAL = ["blurred", "wiener_oracle", "richardson_lucy"]


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc_status(workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    """The status of the study (the `robustness` stage and what it needs; the photo fetch is not, on skimage)."""
    return dict(json.loads(run(["dvc", "status", "--json", "--with-deps", "robustness"], workdir, env).stdout or "{}"))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("clones")
    workdir = clone_project(REPO, root / "first", TINY_PARAMS)
    env = clone_env(workdir, ray_tmp)
    first = run(["bash", "scripts/study.sh"], workdir, env, timeout=2400)
    robustness = json.loads((workdir / "reports/robustness.json").read_text())
    registered = {v: json.loads((workdir / f"reports/runs/{v}-s0/registered.json").read_text()) for v in VARIANTS}
    again = run(["dvc", "repro", "robustness"], workdir, env)
    status = dvc_status(workdir, env)
    # Share the finished study: a DVC remote both clones reach, the lock and reports in git.
    run(["dvc", "remote", "add", "-d", "shared", str(root / "shared-dvc-remote")], workdir, env)
    run(["git", "add", "-A"], workdir, env)
    run(["git", "commit", "-qm", "tiny study"], workdir, env)
    pushed = run(["dvc", "push"], workdir, env)
    # A colleague: a clone of that commit, an empty SQLite tracking store, `dvc pull`, the run command.
    second = clone_project(workdir, root / "second")
    second_env = clone_env(second, ray_tmp)
    status_before_pull = dvc_status(second, second_env)
    run(["dvc", "pull", "--with-deps", "robustness"], second, second_env)
    pulled = run(["bash", "scripts/study.sh"], second, second_env, timeout=1200)
    # Train one run more: `dvc exp run -S` reruns its train (resuming from the checkpoint), register, evaluate.
    exp = run(["dvc", "exp", "run", "-S", "train.max_epochs=3", "evaluate@bdirnet-0"], workdir, env, timeout=900)
    return {"workdir": workdir, "first": first, "robustness": robustness, "registered": registered, "again": again,
            "status": status, "pushed": pushed, "second": second, "status_before_pull": status_before_pull,
            "pulled": pulled, "exp": exp, "uri": f"sqlite:///{workdir / 'mlflow.db'}",
            "second_uri": f"sqlite:///{second / 'mlflow.db'}"}  # fmt: skip


def test_report_has_every_variant_by_family_cell(study: dict[str, Any]) -> None:
    report = study["robustness"]
    assert list(report["variants"]) == VARIANTS + CLASSICAL
    n_test_crops = report["variants"]["blurred"]["families"]["gaussian"]["n"]
    assert n_test_crops >= 8, "4 textured test photos give up to 3 crops each"
    held_out = TINY_PARAMS["degrade"]["held_out_families"]
    for name, row in report["variants"].items():
        assert set(row["families"]) == set(FAMILIES), name
        for family, cell in row["families"].items():
            assert cell["held_out"] is (family in held_out)
            assert cell["n"] == n_test_crops  # every family on the same textured crops
            for key in ("psnr", "psnr_std", "ssim"):
                assert isinstance(cell[key], float) and cell[key] == cell[key], (name, family, key)
        assert row["seeds"] == ([0] if name in VARIANTS else [])
        assert (row["params"] > 0) is (name in VARIANTS)
        assert isinstance(row["held_out_minus_in_family_db"], float)
    assert report["variants"]["blurred"]["in_family"]["gain_db"] == 0.0
    assert set(report["comparisons"]) == {
        f"bdirnet_vs_{foil}" for foil in ("transfer", "transfer_residual") if foil in VARIANTS
    }
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
        if variant not in VARIANTS:  # transfer: the full study's
            continue
        params = registry.version_params(study["uri"], study["registered"][variant]["version"])
        assert params["model.said"] == "False" and params["model.sair"] == "False", variant
        assert params["model.global_residual"] == residual, variant
        assert float(params["train.loss.latent_weight"]) == 0.0, variant
        assert float(params["train.loss.autoencode_weight"]) == 0.0, variant
    full = registry.version_params(study["uri"], study["registered"]["bdirnet"]["version"])
    assert full["model.said"] == "True" and full["model.sair"] == "True" and full["model.global_residual"] == "False"
    assert float(full["train.loss.latent_weight"]) > 0
    if "no_said" in VARIANTS:  # the full study's ablations
        assert registry.version_params(study["uri"], study["registered"]["no_said"]["version"])["model.said"] == "False"


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


def test_the_run_command_finishes_in_a_fresh_clone(study: dict[str, Any]) -> None:
    output = study["first"].stdout + study["first"].stderr
    for variant in VARIANTS:
        assert f"train@{variant}-0" in ran_stages(output), f"train@{variant}-0 was skipped:\n{output[-3000:]}"
    assert "study:" in output and "| bdirnet |" in output  # the matrix printed by `bdirnet table`
    workdir = study["workdir"]
    for variant in VARIANTS:
        _, meta = load_weights(workdir / f"models/{variant}-s0.pt")
        assert meta["variant"] == variant and meta["seed"] == 0
        registered = json.loads((workdir / f"reports/runs/{variant}-s0/registered.json").read_text())
        assert registered["weights_sha256"] == file_sha256(workdir / f"models/{variant}-s0.pt")  # now, after exp run


def test_git_tracked_reports_hold_no_machine_paths(study: dict[str, Any]) -> None:
    workdir = study["workdir"]
    tracked = run(["git", "ls-files", "reports"], workdir, clone_env(workdir, "/tmp")).stdout.split()
    texts = {name: (workdir / name).read_text() for name in tracked if name.endswith((".json", ".md", ".csv"))}
    assert any(name.endswith("train.json") for name in texts)
    for name, text in texts.items():
        assert str(workdir) not in text and str(workdir.parent) not in text, name
    train = json.loads((workdir / "reports/runs/bdirnet-s0/train.json").read_text())
    assert train["tracking_uri"] == "sqlite:///mlflow.db"
    assert train["best_checkpoint"].startswith("checkpoints/") and train["weights"] == "models/bdirnet-s0.pt"


def test_second_repro_is_a_no_op(study: dict[str, Any]) -> None:
    again = study["again"].stdout
    # Only the registry checks run (always_changed), and each finds its version and writes nothing new.
    assert ran_stages(again) == {f"register@{v}-0" for v in VARIANTS}, again
    assert again.count("already registered as bdirnet version") == len(VARIANTS)
    assert set(study["status"]) == {f"register@{v}-0" for v in VARIANTS}, study["status"]
    assert all(entry == ["always changed"] for entry in study["status"].values()), study["status"]


def test_a_clone_without_the_models_does_not_skip_training(study: dict[str, Any]) -> None:
    """The trap: a committed dvc.lock and git-tracked train.json must not make DVC skip a missing model."""
    status = study["status_before_pull"]
    for variant in VARIANTS:
        changed = status[f"train@{variant}-0"]
        outs = next(entry["changed outs"] for entry in changed if "changed outs" in entry)
        assert outs.get(f"models/{variant}-s0.pt") in ("deleted", "not in cache"), changed


def test_a_pulled_study_retrains_nothing_and_registers_into_the_fresh_store(study: dict[str, Any]) -> None:
    output = study["pulled"].stdout + study["pulled"].stderr
    ran = ran_stages(output)
    assert not {s for s in ran if s.startswith(("train@", "bundle", "ingest", "pairs", "classical"))}, ran
    assert {f"evaluate@{v}-0" for v in VARIANTS} <= ran and "robustness" in ran, ran
    second, uri = study["second"], study["second_uri"]
    for variant in VARIANTS:
        registered = json.loads((second / f"reports/runs/{variant}-s0/registered.json").read_text())
        evaluated = json.loads((second / f"reports/runs/{variant}-s0/eval.json").read_text())
        weights = second / f"models/{variant}-s0.pt"
        assert registered["weights_sha256"] == file_sha256(weights)
        assert registered["weights_sha256"] == study["registered"][variant]["weights_sha256"]  # what the first pushed
        assert registry.version_tags(uri, registered["version"])[registry.WEIGHTS_TAG] == file_sha256(weights)
        assert evaluated["model"]["version"] == registered["version"] and evaluated["run_id"] == registered["run_id"]
        assert registry.run_exists(uri, evaluated["run_id"])
        assert not registry.run_exists(study["uri"], evaluated["run_id"])  # a run of the new store, not the old
    assert registry.alias_version(uri, "champion") is not None


def test_a_report_naming_a_missing_version_fails_with_one_line(study: dict[str, Any], tmp_path: Path) -> None:
    workdir = study["workdir"]
    env = clone_env(workdir, "/tmp", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'empty.db'}")
    result = subprocess.run(
        ["python", "pipelines/evaluate.py", "--pairs", "data/pairs", "--real-blur", "data/raw/real_blur",
         "--registered", "reports/runs/bdirnet-s0/registered.json", "--report", str(tmp_path / "eval.json"),
         "--images", str(tmp_path / "images")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # (MLflow logs its DB set-up)
    assert len(lines) == 1 and "has no version" in lines[0] and "dvc repro" in lines[0], result.stderr[-3000:]
    assert "empty.db" in lines[0] and "Traceback" not in result.stderr


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
    assert "train@transfer_residual-0" not in output  # only the targeted run's chain reruns
    state = torch.load(workdir / train["latest_checkpoint"] / "state.pt", map_location="cpu", weights_only=True)
    steps = state["step"]
    assert state["epoch"] == 2 and steps > 0
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {float(steps)}, "optimizer state was not restored"
    assert state["scheduler"]["last_epoch"] == steps
    evaluated = json.loads((workdir / "reports/runs/bdirnet-s0/eval.json").read_text())
    assert evaluated["model"]["version"] == str(len(VARIANTS) + 1)
    # An identity-initialised model scores exactly 0 dB: a real margin proves learning.
    gain = evaluated["in_family"]["psnr"] - evaluated["in_family"]["blurred_psnr"]
    assert gain >= 1.0, f"in-family gain after 3 epochs is only {gain:+.2f} dB: {evaluated['in_family']}"
