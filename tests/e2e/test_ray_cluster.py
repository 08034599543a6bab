"""A two-node Ray cluster on this machine, for real: `ray start --head` plus a second node joining it, the train
stage submitted with `ray job submit --working-dir .`, its 2 Train workers forced onto different nodes with
custom resources, storage on the S3 server. Every process started here is stopped afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bdirnet import storage
from bdirnet.weights import load_weights

from ..s3server import free_port, group_alive, stop, wait_for_http
from .conftest import TINY_PARAMS, VENV_BIN, make_project, merge, project_env, run

pytestmark = pytest.mark.slow


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start ... --block` in its own process group, so that stopping the group stops exactly this node."""
    with log.open("wb") as handle:
        return subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", *args, "--block", "--disable-usage-stats"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    temp = tempfile.mkdtemp(prefix="bdrc-", dir="/tmp")
    gcs_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    address = f"127.0.0.1:{gcs_port}"
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        # Every node's dashboard agent on a free port: the default 52365 is taken by any other Ray on this machine
        # (a study's head, another test's session), and a head whose agent cannot bind has no Jobs API.
        head_args = ["--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={free_port()}",
                     "--num-cpus=2", '--resources={"train_slot": 1}', f"--temp-dir={temp}"]  # fmt: skip
        nodes.append(start_node(head_args, env, tmp_path / "head.log"))
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        wait_for_http(f"{dashboard}/api/version", nodes[0], seconds=90, what="ray head (dashboard, Jobs API)")
        nodes.append(start_node([f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                                 f"--dashboard-agent-listen-port={free_port()}", '--resources={"train_slot": 1}'],
                                env, tmp_path / "worker.log"))  # fmt: skip
        deadline = time.monotonic() + 90
        while subprocess.run([str(VENV_BIN / "ray"), "job", "list", f"--address={dashboard}"], env=env,
                             capture_output=True, timeout=60).returncode != 0:  # fmt: skip
            assert time.monotonic() < deadline, "the Ray Jobs API did not answer"
            time.sleep(2)
        yield {"address": address, "dashboard": dashboard, "temp": temp}
    finally:
        for node in reversed(nodes):
            stop(node)
        shutil.rmtree(temp, ignore_errors=True)
    assert not any(group_alive(node.pid) for node in nodes), "a Ray node process outlived the test"


def test_train_job_on_two_nodes_with_s3_storage(
    cluster: dict[str, str], s3_endpoint: str, tmp_path: Path, ray_tmp: str
) -> None:
    params = merge(TINY_PARAMS, {"train": {"samples_per_epoch": 288}})
    workdir = make_project(tmp_path, params)
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    storage_env = {"BDIRNET_STORAGE": "s3://bdirnet-test/cluster", "AWS_ENDPOINT_URL": s3_endpoint, **aws}
    env = project_env(workdir, ray_tmp, **storage_env)
    for script, args in (("bundle", ["--out", "data/raw/skimage", "--real-blur-out", "data/raw/real_blur"]),
                         ("ingest", ["--out", "data/ingested"]),
                         ("pairs", ["--ingested", "data/ingested", "--out", "data/pairs"])):  # fmt: skip
        run(["python", f"pipelines/{script}.py", *args], workdir, env)

    runtime_env = {
        "env_vars": {**storage_env, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "BDIRNET_TRAIN_WORKER_RESOURCES": '{"train_slot": 1}'},
        "excludes": ["data/", ".git/", "mlartifacts/", "checkpoints/"],
    }  # fmt: skip
    for _attempt in range(40):  # the head's job agent may need a while (minutes on a busy 2-core machine)
        submit = run_unchecked(
            [str(VENV_BIN / "ray"), "job", "submit", f"--address={cluster['dashboard']}", "--working-dir", ".",
             f"--runtime-env-json={json.dumps(runtime_env)}", "--",
             # data/ is not shipped: the driver (on the head) reads the train photos and puts them in the object
             # store for the blur actors, wherever they run; the val pairs are on S3.
             "python", "pipelines/train.py", "--ingested", str(workdir / "data/ingested"), "--pairs", "data/pairs",
             "--weights", str(tmp_path / "model.pt"),
             "--report", str(tmp_path / "train.json")],
            workdir, project_env(workdir, ray_tmp), timeout=900,
        )  # fmt: skip
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(3)
    output = submit.stdout + submit.stderr
    assert re.search(r"Job '[^']+' succeeded", output), output[-4000:]
    nodes = set(re.findall(r"\[train\] worker \d/2 on node (\w+)", output))
    assert len(nodes) == 2, f"Train workers ran on {len(nodes)} node(s):\n{output[-4000:]}"
    assert json.loads((tmp_path / "train.json").read_text())["best_checkpoint"].startswith("s3://")
    assert load_weights(tmp_path / "model.pt")[1]["epochs"] == 1  # the weights file, written by the job
    objects = storage.list_objects("s3://bdirnet-test/cluster/checkpoints")
    assert any(key.endswith("/state.pt") for key in objects), objects


def run_unchecked(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
