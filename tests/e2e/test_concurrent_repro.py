"""Concurrent DVC runs on one repository, run the way `scripts/study.sh` runs the study (`bdirnet with-ray -- dvc
--wait-for-lock repro`, tiny params, up to the `pairs` stage: tens of seconds).

- Two runs started at once: one is refused by DVC's lock with DVC's own message, no traceback; the other finishes
  as if alone: `dvc status` clean, `dvc.lock` valid, outputs intact, no lock left behind (a third repro runs
  nothing), and no process of either run outlives it.
- Another DVC process holding the repository lock when a stage command ends (what the refused run does while it
  checks, or a `dvc status` in another terminal): the study waits for it instead of failing after its stage ran.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
import zc.lockfile

from .conftest import REPO, TINY_PARAMS, clone_env, make_project, run

pytestmark = pytest.mark.slow

TARGET = "pairs"  # bundle -> ingest -> pairs: the first stages of the study, Ray Data included
STUDY = "bdirnet with-ray -- dvc --wait-for-lock repro"  # scripts/study.sh's command (checked below)
COMMAND = [*STUDY.split(), TARGET]
REFUSAL = re.compile(r"^ERROR: failed to reproduce '[^']+': '[^']+' is busy, it is being blocked by:$", re.M)


def test_the_command_is_the_study_command() -> None:
    assert f'{STUDY} "$@" robustness' in (REPO / "scripts/study.sh").read_text()


@pytest.fixture
def ray_tmps() -> Iterator[tuple[str, str]]:
    """A Ray session folder for each of the two runs (each `with-ray` starts its own head)."""
    paths = (tempfile.mkdtemp(prefix="bdr1-", dir="/tmp"), tempfile.mkdtemp(prefix="bdr2-", dir="/tmp"))
    yield paths
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def start(workdir: Path, ray_tmp: str, log: Path, target: str = TARGET) -> subprocess.Popen[bytes]:
    """The study command for ``target`` in its own session, stdout and stderr to ``log``."""
    with log.open("wb") as handle:
        return subprocess.Popen([*STUDY.split(), target], cwd=workdir, env=clone_env(workdir, ray_tmp),
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def descendants(process: subprocess.Popen[bytes]) -> set[psutil.Process]:
    try:
        return set(psutil.Process(process.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


def wait_watching(process: subprocess.Popen[bytes], seen: set[psutil.Process], timeout: float) -> None:
    """Wait for ``process`` to exit, adding every descendant it has meanwhile to ``seen``."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        seen |= descendants(process)
        assert time.monotonic() < deadline, f"{' '.join(COMMAND)} still running after {timeout} s"
        time.sleep(0.2)


def test_second_repro_is_refused_by_the_lock_and_the_first_finishes_intact(
    tmp_path: Path, ray_tmps: tuple[str, str]
) -> None:
    workdir = make_project(tmp_path, TINY_PARAMS)
    env = clone_env(workdir, ray_tmps[0])
    logs = (tmp_path / "a.log", tmp_path / "b.log")
    seen: set[psutil.Process] = set()
    runs: list[subprocess.Popen[bytes]] = []
    try:
        runs = [start(workdir, ray_tmp, log) for ray_tmp, log in zip(ray_tmps, logs, strict=True)]  # at once
        for process in runs:
            wait_watching(process, seen, timeout=600)
    finally:
        for process in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    codes = [process.returncode for process in runs]
    assert sorted(codes) == [0, 255], f"exit codes {codes}:\n" + "\n----\n".join(out[-4000:] for out in outputs)
    first_out, second_out = outputs if codes[0] == 0 else outputs[::-1]

    # The second is refused by the lock DVC holds on the running stage's outputs, in DVC's words; no traceback.
    assert REFUSAL.search(second_out) and "dvc --wait-for-lock repro pairs" in second_out, second_out
    assert "Traceback" not in second_out and "Running stage" not in second_out, second_out
    assert len([line for line in second_out.splitlines() if line.startswith("ERROR")]) == 1, second_out

    # The first finishes as if it had been alone.
    assert {"bundle", "ingest", TARGET} <= set(re.findall(r"Running stage '([^']+)'", first_out)), first_out
    status = run(["dvc", "status", "--json", "--with-deps", TARGET], workdir, env).stdout
    assert json.loads(status or "{}") == {}, status
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())
    for stage in ("bundle", "ingest", TARGET):
        outs = lock["stages"][stage]["outs"]
        assert outs and all(out["md5"] and out["nfiles"] > 0 for out in outs), (stage, outs)
    manifest = json.loads((workdir / "data/ingested/manifest.json").read_text())
    assert len(manifest["images"]) == sum(manifest["counts"].values()) > 0
    for split in ("val", "test"):
        assert pq.read_table(workdir / "data/pairs" / split).num_rows > 0, split
    rwlock = json.loads((workdir / ".dvc/tmp/rwlock").read_text())
    assert not any(rwlock.values()), rwlock
    again = run(["dvc", "repro", TARGET], workdir, env)
    assert "Running stage" not in again.stdout + again.stderr, again.stdout  # nothing stale, no lock left
    assert_none_alive(seen)


def assert_none_alive(seen: set[psutil.Process]) -> None:
    """No process of the runs outlives them (the Ray heads, their workers, the stage scripts); any left are killed."""
    deadline = time.monotonic() + 30
    while (alive := [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    left = [(p.pid, p.name()) for p in alive]
    for process in alive:  # never leave them to the next test, even when failing
        process.kill()
    assert not left, f"left behind: {left}"


def test_a_stage_ending_while_another_dvc_holds_the_lock_waits_instead_of_failing(
    tmp_path: Path, ray_tmps: tuple[str, str]
) -> None:
    workdir = make_project(tmp_path, TINY_PARAMS)
    log = tmp_path / "study.log"
    seen: set[psutil.Process] = set()
    study = start(workdir, ray_tmps[0], log, target="ingest")
    try:
        wait_for_line(study, seen, log, "Running stage 'ingest'")  # its command runs: DVC let go of the repo lock
        lock = take_repo_lock(workdir)
        try:
            wait_for_line(study, seen, log, "ingest: ")  # the stage script's last line: DVC wants the lock back
            time.sleep(5)  # longer than DVC's 3 s of retries
        finally:
            lock.close()
        wait_watching(study, seen, timeout=300)
    finally:
        if study.poll() is None:
            study.kill()
            study.wait()
    output = log.read_text(errors="replace")
    assert study.returncode == 0 and "Unable to acquire lock" not in output, output[-4000:]
    status = run(["dvc", "status", "--json", "--with-deps", "ingest"], workdir, clone_env(workdir, ray_tmps[0]))
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    assert_none_alive(seen)


def wait_for_line(process: subprocess.Popen[bytes], seen: set[psutil.Process], log: Path, text: str) -> None:
    deadline = time.monotonic() + 300
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the run ended before {text!r}:\n{log.read_text(errors='replace')[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} after 300 s"
        seen |= descendants(process)
        time.sleep(0.1)


def take_repo_lock(workdir: Path) -> zc.lockfile.LockFile:
    """DVC's repository lock (``.dvc/tmp/lock``, the zc.lockfile every DVC command takes), as another DVC command
    would hold it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return zc.lockfile.LockFile(str(workdir / ".dvc/tmp/lock"))
        except zc.lockfile.LockError:
            assert time.monotonic() < deadline, "the repository lock stayed taken"
            time.sleep(0.05)
