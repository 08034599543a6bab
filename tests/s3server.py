"""A real S3-compatible server for tests: ``moto_server`` on 127.0.0.1, a free port, its own process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any; never a real key in the repo
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` and yield its endpoint URL; stop it (and its children) afterwards."""
    port = free_port()
    executable = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/", process, seconds=30)
        yield endpoint
    finally:
        stop(process)


def wait_for_http(url: str, process: subprocess.Popen[bytes], seconds: float, what: str = "") -> None:
    """Poll ``url`` until it answers; fail clearly if ``process`` exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{what or process.args!r} exited ({process.returncode}) before {url} answered"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what or process.args!r}: {url} did not answer within {seconds:.0f}s") from None
            time.sleep(0.3)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group (servers leave children), SIGKILL what is left after 15 s."""
    for sig, grace in ((15, 15.0), (9, 10.0)):
        if group_alive(process.pid):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.2)
            if not group_alive(process.pid):
                return
            time.sleep(0.2)
