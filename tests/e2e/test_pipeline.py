"""The real pipeline, end to end: `dvc repro` in a temporary git repo with real Ray, MLflow (SQLite) and DVC."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from bdirnet.degrade import FAMILIES

from .conftest import TINY_PARAMS, make_project, project_env, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> dict[str, object]:
    root = tmp_path_factory.mktemp("e2e")
    workdir = make_project(root, TINY_PARAMS)
    env = project_env(workdir, ray_tmp)
    first = run(["dvc", "repro"], workdir, env, timeout=900)
    eval_first = json.loads((workdir / "reports/eval.json").read_text())
    again = run(["dvc", "repro"], workdir, env)
    status = run(["dvc", "status"], workdir, env)
    # Train more epochs: `dvc exp run -S` reruns train (resuming from the checkpoint), register and evaluate.
    exp = run(["dvc", "exp", "run", "-S", "train.max_epochs=3"], workdir, env, timeout=900)
    return {"workdir": workdir, "first": first, "eval_first": eval_first, "again": again, "status": status,
            "exp": exp}  # fmt: skip


def test_registry_and_aliases(study: dict[str, object]) -> None:
    workdir = Path(str(study["workdir"]))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'bdirnet'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert str(client.get_model_version_by_alias("bdirnet", "challenger").version) == "2"
    champion = str(client.get_model_version_by_alias("bdirnet", "champion").version)
    report = json.loads((workdir / "reports/eval.json").read_text())
    assert champion == ("2" if report["promoted"] else "1")
    assert study["eval_first"]["promoted"] is True and study["eval_first"]["decision"] == "no champion yet"
    assert "vs champion" in report["decision"]


def test_every_family_scored(study: dict[str, object]) -> None:
    report = json.loads((Path(str(study["workdir"])) / "reports/eval.json").read_text())
    assert report["model"] == {"name": "bdirnet", "version": "2"}
    assert set(report["families"]) == set(FAMILIES)
    for name, row in report["families"].items():
        assert row["held_out"] is (name in TINY_PARAMS["degrade"]["held_out_families"])
        assert row["n"] == 3 * 4  # 3 test photos x a 2x2 grid of crops
        for key in ("psnr", "ssim", "blurred_psnr", "blurred_ssim"):
            assert isinstance(row[key], float)
    csv_rows = (Path(str(study["workdir"])) / "reports/robustness.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 2 * len(FAMILIES)
    images = sorted(p.name for p in (Path(str(study["workdir"])) / "reports/images").iterdir())
    assert len(images) == 2 * len(FAMILIES)


def test_restored_beats_blurred_on_training_families(study: dict[str, object]) -> None:
    report = json.loads((Path(str(study["workdir"])) / "reports/eval.json").read_text())
    in_family = report["in_family"]
    assert in_family["psnr"] > in_family["blurred_psnr"], report["families"]


def test_second_repro_is_a_no_op(study: dict[str, object]) -> None:
    again = study["again"].stdout  # type: ignore[attr-defined]
    assert "Running stage" not in again, again
    assert "up to date" in study["status"].stdout.lower()  # type: ignore[attr-defined]


def test_exp_run_resumes_training(study: dict[str, object]) -> None:
    workdir = Path(str(study["workdir"]))
    train = json.loads((workdir / "reports/train.json").read_text())
    assert train["epochs"] == 3
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    # One MLflow run for the Ray run; epoch 0 logged once (by the first repro), epochs 1-2 by the resumed run.
    epochs = [m.value for m in client.get_metric_history(train["mlflow_run_id"], "epoch")]
    assert sorted(epochs) == [0.0, 1.0, 2.0]
    output = study["exp"].stdout + study["exp"].stderr  # type: ignore[attr-defined]
    assert "resuming from epoch 1" in output
    state = torch.load(Path(train["latest_checkpoint"]) / "state.pt", map_location="cpu", weights_only=False)
    steps = state["step"]
    assert state["epoch"] == 2 and steps > 0
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {float(steps)}, "optimizer state was not restored"
    assert state["scheduler"]["last_epoch"] == steps
