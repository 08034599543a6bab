"""A real S3-compatible server for tests: ``moto_server`` on 127.0.0.1, a free port, its own process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
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
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``moto_server`` and yield its endpoint URL; stop it (and its children) afterwards. ``env`` adds to
    the server's environment (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT``, after which moto enforces IAM)."""
    port = free_port()
    executable = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
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


class CuttableLink:
    """A TCP relay on a loopback port in front of a server, that can go down like a network or a stopped server:
    ``cut()`` closes the listener and every open connection mid-stream; ``restore()`` listens on the same port
    again, with the server behind it unchanged. ``cut_after_bytes`` cuts by itself once that many bytes have been
    relayed, both ways (mid-upload or mid-download, at a reproducible point)."""

    def __init__(self, upstream_port: int, cut_after_bytes: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut_after_bytes = cut_after_bytes
        self.sent = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self.cuts += listener is not None
        for sock in [s for s in (listener,) if s is not None] + list(sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
                with self._lock:
                    self.sent += len(chunk)
                    over = self.cut_after_bytes is not None and self.sent >= self.cut_after_bytes
                    if over:
                        self.cut_after_bytes = None
                if over:
                    self.cut()
                    return
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
