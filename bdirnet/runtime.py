"""Where things run and where they are stored: Ray start-up and the storage root, from the environment.

- ``RAY_ADDRESS`` set: join that cluster (``ray start --head`` / ``ray up``, or the study's own head from
  :func:`run_in_ray_session`); unset: start a local Ray on loopback with its session files under ``BDIRNET_RAY_TMP``
  (default ``/tmp/bdirnet-ray``), dashboard on loopback, no usage stats.
- :func:`run_in_ray_session` (``bdirnet with-ray -- dvc repro``): one local head for a whole study, which every stage
  joins through ``RAY_ADDRESS`` (about 1.5 s to join vs 5-7 s to start Ray on 2 cores), stopped when the command
  ends, fails or is interrupted.
- A local Ray (its own or the study's head) runs Ray Train without its preemption watcher and metrics
  (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``, ``RAY_TRAIN_METRICS_ENABLED=0``, set only when the user has not):
  one machine has no spot nodes to drain and no Prometheus to scrape, and the watcher is one more worker process
  per run (measured: ~1.5 s less per-run overhead on 2 cores). A cluster (``RAY_ADDRESS``) keeps Ray's defaults.
- Not set: ``RAY_preload_python_modules`` (measured, issue 14). Ray imports those modules in *every* Python worker
  before it takes work, also in the many that never use torch (Ray Data's stats/autoscaling actors, write tasks,
  Ray Train's controller helpers), and Ray Train's controller and workers run under a runtime env of their own, so
  they never take the prestarted (warm) workers anyway: the pairs stage took 1.7-3x longer with
  ``torch,kornia`` preloaded, a training run ~3 s more overhead. A user who sets it still gets actors at one torch
  thread per CPU they hold (:func:`pin_torch_threads`): torch imported before Ray sets ``OMP_NUM_THREADS=1`` would
  otherwise take every core in every actor.
- ``BDIRNET_STORAGE``: the root for pair shards (``/pairs``) and Ray Train checkpoints (``/checkpoints``), a
  local folder or ``s3://bucket/prefix``; unset, each stage uses the local folder given on its command line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_RAY_TMP = "/tmp/bdirnet-ray"


def stage_location(local: Path, name: str) -> str:
    """Where a stage's shared data lives: ``$BDIRNET_STORAGE/<name>`` when that is set (a folder or
    ``s3://...``), else the stage's local folder, made absolute."""
    root = os.environ.get("BDIRNET_STORAGE", "").strip()
    return join_uri(root, name) if root else str(local.resolve())


def portable_location(location: str) -> str:
    """``location`` as it may be recorded in a git-tracked report: a local path under the repository (the working
    directory) made relative to it, one under a local ``BDIRNET_STORAGE`` as ``$BDIRNET_STORAGE/...``; a URI
    (``s3://...``) names shared storage and is kept. Never an absolute path of this machine."""
    if "://" in location:
        return location
    path = Path(location)
    if not path.is_absolute():
        return path.as_posix()
    storage = os.environ.get("BDIRNET_STORAGE", "").strip()
    if storage and "://" not in storage and path.is_relative_to(Path(storage).resolve()):
        return f"$BDIRNET_STORAGE/{path.relative_to(Path(storage).resolve()).as_posix()}"
    root = Path.cwd().resolve()
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    raise ValueError(
        f"{location}: outside the repository and BDIRNET_STORAGE; pass a folder under the repository or set "
        "BDIRNET_STORAGE so that reports hold no machine-specific paths"
    )


def resolve_location(recorded: str) -> str:
    """The inverse of :func:`portable_location` on this machine (``$BDIRNET_STORAGE`` expanded)."""
    prefix = "$BDIRNET_STORAGE/"
    if recorded.startswith(prefix):
        storage = os.environ.get("BDIRNET_STORAGE", "").strip()
        if not storage:
            raise ValueError(f"{recorded}: recorded under BDIRNET_STORAGE, which is not set here")
        return join_uri(storage, recorded[len(prefix) :])
    return recorded


def join_uri(root: str, *parts: str) -> str:
    """Join a local path or a URI with ``/``."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def init_ray(num_cpus: int | None = None) -> Any:
    """Connect to ``RAY_ADDRESS`` or start a local Ray (idempotent).

    Local Ray is started with token authentication off (``RAY_AUTH_MODE=disabled``, set here only when the
    user has not chosen): it serves this machine's own stages. Ray binds its GCS to the node's address (it turns a
    loopback ``_node_ip_address`` into that address itself), so on a shared network set ``RAY_AUTH_MODE=token``;
    a shared cluster should keep auth. The local dashboard (and its state API) binds to 127.0.0.1.
    """
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray starts its workers at nice 15, so on a shared machine every other process (a plain loop, another
        # user's job) takes the cores from the stage's actors and Train workers first. This Ray exists to run the
        # stage's own work: its workers get the stage's priority (set RAY_worker_niceness to choose otherwise).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # One machine: no preemptible nodes for Ray Train's preemption watcher (an actor and a poll loop per run),
        # no Prometheus for its metrics. Ray Train reads both in the driver and passes them to its controller.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
        temp_dir = os.environ.get("BDIRNET_RAY_TMP", DEFAULT_RAY_TMP)
        if num_cpus is None:
            # Two logical CPUs beyond the cores, so Ray Data's read/decode tasks still get scheduled while
            # every core holds a Train worker (else the data pipeline starves and training hangs). Torch
            # threads are set per worker, so this only affects scheduling.
            num_cpus = int(os.environ.get("BDIRNET_RAY_CPUS", (os.cpu_count() or 1) + 2))
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,  # serves the state API Ray Train's controller queries; loopback only
            dashboard_host="127.0.0.1",
            dashboard_port=_free_port(),  # not the fixed 8265: two local studies (or a test) may run at once
            _temp_dir=temp_dir,
            configure_logging=True,
            logging_level="WARNING",
            log_to_driver=True,
        )
    return ray


def run_in_ray_session(command: Sequence[str], num_cpus: int | None = None) -> int:
    """Run ``command`` with a local Ray head that its processes join through ``RAY_ADDRESS``; returns its exit code.

    The head belongs to this process: it is shut down when the command exits, fails, is killed or when this
    process gets Ctrl-C/SIGTERM (forwarded to the command first); if this process itself is killed, Ray's
    processes die with it (Ray starts them fate-shared with the driver that started them). With ``RAY_ADDRESS``
    already set (a cluster), the command simply joins that cluster.
    """
    import signal
    import subprocess

    if not command:
        raise ValueError("run_in_ray_session: no command given")
    if os.environ.get("RAY_ADDRESS"):
        return subprocess.call(list(command))
    ray = init_ray(num_cpus)
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        address = ray.get_runtime_context().gcs_address
        env = os.environ | {"RAY_ADDRESS": address, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        # Its own process group: a terminal's Ctrl-C reaches it once, through `forward`, and what is left of it
        # when this process ends can be killed as a whole.
        child = subprocess.Popen(list(command), env=env, process_group=0)
        code = child.wait()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + N
    finally:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # stragglers of the command (a stage's Ray driver, ...)
            child.wait()
        shutdown_ray()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pin_torch_threads() -> None:
    """In a Ray actor or task that holds CPUs: torch's intra-op threads = the CPUs it holds (at least 1).

    Ray sets ``OMP_NUM_THREADS`` to those CPUs only when a worker takes its work, and torch reads it once, at
    import: a worker that imported torch earlier (``RAY_preload_python_modules``) would run on every core of the
    machine, beside the other actors (measured on 2 cores: the pairs stage 1.7-3x slower). Same threads as a worker
    that imports torch itself; no-op outside a Ray worker and for work that holds no CPU (a GPU actor).
    """
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
    if cpus >= 1:
        import torch

        torch.set_num_threads(cpus)


# Ports a local Ray takes by default for its own components: a dashboard on one of them fails ray.init with "port
# ... used by other components" (seen in CI: the OS handed out 52365, the dashboard agent's fixed HTTP port).
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def _free_port(avoid: frozenset[int] = RAY_DEFAULT_PORTS) -> int:
    """A port on 127.0.0.1 that is free now and is none of ``avoid``."""
    import socket

    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 outside {sorted(avoid)} after 100 tries")


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
