"""`bdirnet with-ray`: one local Ray head for a whole command, joined through RAY_ADDRESS, and nothing of it left
behind when the command ends, is killed mid-way, or the user presses Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A stage-like Ray driver: joins the session, runs a task, writes what it saw, then behaves as told.
STAGE = textwrap.dedent(
    """
    import json, os, sys, time
    from bdirnet.runtime import init_ray
    ray = init_ray()

    @ray.remote
    def where():
        return os.getpid()

    seen = {"address": os.environ.get("RAY_ADDRESS"), "gcs": ray.get_runtime_context().gcs_address,
            "task_pid": ray.get(where.remote())}
    open(sys.argv[1], "w").write(json.dumps(seen))
    if sys.argv[2] == "kill-self":
        os.kill(os.getpid(), 9)
    if sys.argv[2] == "hang":
        time.sleep(600)
    """
)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(f"{cmdline.parent.name}: {command[:160]}")
    return found


def wait_until_gone(text: str, seconds: float = 20.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture
def session_env(tmp_path: Path) -> dict[str, str]:
    # Ray's socket paths must stay short: a short temp dir of our own, named for this test run only.
    ray_tmp = f"/tmp/bdirnet-rs-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"BDIRNET_RAY_TMP": ray_tmp, "BDIRNET_RAY_CPUS": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    return env


def with_ray(env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bdirnet.cli", "with-ray", "--", *command], env=env)


def test_stages_join_one_head_and_it_stops_with_the_command(tmp_path: Path, session_env: dict[str, str]) -> None:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    # Two drivers one after the other, like two `dvc repro` stages, in one session.
    shell = f"{sys.executable} {script} {first} done && {sys.executable} {script} {second} done"
    assert with_ray(session_env, "bash", "-c", shell).wait(timeout=300) == 0
    import json

    seen = [json.loads(p.read_text()) for p in (first, second)]
    assert seen[0]["address"] and seen[0]["address"] == seen[1]["address"] == seen[0]["gcs"] == seen[1]["gcs"]
    assert wait_until_gone(session_env["BDIRNET_RAY_TMP"]) == []


def test_a_stage_killed_mid_way_leaves_no_ray_process(tmp_path: Path, session_env: dict[str, str]) -> None:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    wrapper = with_ray(session_env, sys.executable, str(script), str(tmp_path / "seen.json"), "kill-self")
    assert wrapper.wait(timeout=300) == 128 + signal.SIGKILL  # the stage's fate, as a shell reports it
    assert (tmp_path / "seen.json").exists()  # it had joined and run a task before it died
    assert wait_until_gone(session_env["BDIRNET_RAY_TMP"]) == []


def test_ctrl_c_stops_the_command_and_the_head(tmp_path: Path, session_env: dict[str, str]) -> None:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    seen = tmp_path / "seen.json"
    wrapper = with_ray(session_env, sys.executable, str(script), str(seen), "hang")
    deadline = time.monotonic() + 240
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen.exists(), "the stage never joined the session"
    wrapper.send_signal(signal.SIGINT)
    assert wrapper.wait(timeout=120) != 0
    assert wait_until_gone(session_env["BDIRNET_RAY_TMP"]) == []
    assert wait_until_gone(str(seen)) == []  # the stage itself is gone too


def test_with_ray_needs_a_command() -> None:
    result = subprocess.run([sys.executable, "-m", "bdirnet.cli", "with-ray"], capture_output=True, text=True)
    assert result.returncode == 2 and "give the command after --" in result.stderr


# A local Ray whose workers import torch before they take work (the user's RAY_preload_python_modules): the blur
# actors still run on the one CPU each holds, and init_ray's own defaults for a local Ray are in place.
PRELOADED = textwrap.dedent(
    """
    import json, os, sys
    from bdirnet.runtime import init_ray
    os.environ["RAY_TRAIN_METRICS_ENABLED"] = "1"  # the user's choice wins
    ray = init_ray()

    @ray.remote(num_cpus=0)  # the two actors below hold both CPUs
    def preloaded():
        return "torch" in sys.modules  # this function imports nothing: only the worker's preload can have

    from bdirnet.pairs import BlurPairs
    from bdirnet.streaming import TrainPairMaker, StreamPlan

    def threads(actor):
        return actor.__ray_call__.remote(lambda self: __import__("torch").get_num_threads())

    blur = ray.remote(num_cpus=1)(BlurPairs).remote(sys.argv[2], 0.01, 70)
    plan = StreamPlan(sys.argv[2], (), (), 32, 0, 8, ("gaussian",), 0.0, 0.01, 70)
    maker = ray.remote(num_cpus=1)(TrainPairMaker).remote(plan, {})
    seen = {"preloaded": ray.get(preloaded.remote()), "blur": ray.get(threads(blur)),
            "maker": ray.get(threads(maker)), "cores": os.cpu_count(),
            "env": {k: os.environ.get(k) for k in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
                                                  "RAY_TRAIN_METRICS_ENABLED")}}
    open(sys.argv[1], "w").write(json.dumps(seen))
    """
)


def test_preloaded_torch_keeps_one_thread_per_actor_cpu(tmp_path: Path, session_env: dict[str, str]) -> None:
    script = tmp_path / "preloaded.py"
    script.write_text(PRELOADED)
    env = {k: v for k, v in session_env.items() if not k.startswith("RAY_TRAIN_")}
    env["RAY_preload_python_modules"] = "torch"
    seen_file = tmp_path / "seen.json"
    subprocess.run([sys.executable, str(script), str(seen_file), str(tmp_path)], env=env, check=True, timeout=300)
    import json

    seen = json.loads(seen_file.read_text())
    assert seen["preloaded"] is True  # the raylet passed the preload on: the workers had torch before any work
    # Without pin_torch_threads a preloaded torch takes every core (2 on the test machine) in each actor.
    assert seen["blur"] == seen["maker"] == 1
    assert seen["env"] == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "1"}
    assert wait_until_gone(session_env["BDIRNET_RAY_TMP"]) == []


def test_the_dashboard_port_is_never_one_of_rays_own_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI once failed at ray.init: the OS handed out 52365 for the dashboard, the dashboard agent's fixed port."""
    import socket

    from ray._private import ray_constants

    from bdirnet import runtime

    assert {
        ray_constants.DEFAULT_PORT,
        ray_constants.DEFAULT_DASHBOARD_PORT,
        ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
    } <= runtime.RAY_DEFAULT_PORTS

    handed_out = iter([ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, 8265, 40123])

    class Socket:
        def __enter__(self) -> Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(handed_out)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", Socket)
    assert runtime._free_port() == 40123
