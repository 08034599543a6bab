"""S3 where it belongs, through a real S3 server on loopback: DVC remote, MLflow server artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

from bdirnet import storage

from .s3server import free_port, group_alive, stop, wait_for_http

BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_dvc_push_pull_through_s3_remote(s3_endpoint: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "mine").mkdir(parents=True)
    (repo / "data" / "raw" / "mine" / "photo.bin").write_bytes(os.urandom(4096))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "remote", "add", "-d", "s3", "s3://bdirnet-test/dvc"],
        ["dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint],
        ["dvc", "add", "data/raw/mine"],
        ["dvc", "push"],
    ):
        sh([str(BIN / cmd[0]) if cmd[0] == "dvc" else cmd[0], *cmd[1:]], repo, env)
    assert storage.list_objects("s3://bdirnet-test/dvc"), "dvc push put nothing on S3"
    original = (repo / "data" / "raw" / "mine" / "photo.bin").read_bytes()
    sh(["rm", "-rf", "data/raw/mine", ".dvc/cache"], repo, env)
    sh([str(BIN / "dvc"), "pull"], repo, env)
    assert (repo / "data" / "raw" / "mine" / "photo.bin").read_bytes() == original


def test_mlflow_server_stores_artifacts_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", "s3://bdirnet-test/mlflow"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", server, seconds=90, what="mlflow server")
        artifact = tmp_path / "note.txt"
        artifact.write_text("restored on S3")
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("s3-artifacts")
        run = client.create_run(experiment)
        client.log_artifact(run.info.run_id, str(artifact))
        keys = storage.list_objects("s3://bdirnet-test/mlflow")
        assert any(key.endswith(f"{run.info.run_id}/artifacts/note.txt") for key in keys), keys
    finally:
        stop(server)  # `mlflow server` leaves a job-runner child: the whole process group goes
    assert not group_alive(server.pid)
