"""A real `mlflow models serve` process on loopback, serving a tiny registered BDIRNet from a temp SQLite store: the
JSON of `bdirnet serve-request`, posted as curl would, answers with the restored photo; `bdirnet deblur --server`
tiles through it. Its process group is stopped afterwards (the server leaves a child)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from bdirnet import BDIRNet, ModelConfig, registry
from bdirnet.cli import main as cli_main
from bdirnet.deblur import read_photo, restore, write_photo
from bdirnet.weights import file_sha256, load_weights, save_weights

pytestmark = pytest.mark.slow  # registering (with its ONNX export) and starting the server: ~30 s on 2 cores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group, SIGKILL what is left after 15 s, and wait until none is left."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, BDIRNet]]:
    """A perturbed tiny BDIRNet registered as champion in a fresh store, served; yields (URL, the eager network)."""
    root = tmp_path_factory.mktemp("serve")
    network = BDIRNet(ModelConfig(width_channels=8, levels=2)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    weights = root / "w.pt"
    save_weights(weights, network, {"variant": "test"})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved_cwd = os.getcwd()
    os.chdir(root)  # mlartifacts/ lands here
    try:
        registration = registry.ensure_registered(
            uri, file_sha256(weights), lambda: load_weights(weights)[0], Path(registry.__file__).parent, {},
            run_id=None, run_name="serve-test", params={},
        )  # fmt: skip
    finally:
        os.chdir(saved_cwd)
    registry.set_alias(uri, "champion", registration.version)
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true")
    log = (root / "serve.log").open("wb")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bdirnet@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not come up:\n{(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, network
    finally:
        stop_group(process)
        log.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no child of the server is left behind


def test_a_served_champion_restores_a_posted_photo(
    served: tuple[str, BDIRNet], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, network = served
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()[:61, :90]).save(source)
    request = tmp_path / "request.json"
    assert cli_main(["serve-request", str(source), "-o", str(request)]) == 0
    # What `curl -H 'Content-Type: application/json' --data @request.json $URL/invocations` sends.
    post = urllib.request.Request(f"{url}/invocations", request.read_bytes(), {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(post, timeout=120) as answer:
        (tmp_path / "response.json").write_bytes(answer.read())
    print(f"serve latency for 90×61: {time.perf_counter() - started:.3f}s")
    restored = tmp_path / "restored.png"
    argv = ["serve-response", str(tmp_path / "response.json"), "--photo", str(source), "-o", str(restored)]
    assert cli_main(argv) == 0, capsys.readouterr().err
    photo = read_photo(source)
    write_photo(tmp_path / "eager.png", photo, restore(network, photo.tensor()))
    served_pixels = np.asarray(Image.open(restored)).astype(int)
    eager_pixels = np.asarray(Image.open(tmp_path / "eager.png")).astype(int)
    assert np.abs(served_pixels - eager_pixels).max() <= 1  # the request's 6 decimals, then rounding to 8 bits
    assert np.abs(eager_pixels - np.asarray(Image.open(source)).astype(int)).max() > 10  # the network changes it


def test_deblur_tiles_through_the_server(
    served: tuple[str, BDIRNet], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each tile is one request; the server's network normalises with the tile's own statistics."""
    url, network = served
    source = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()[:100, :130]).save(source)
    argv = ["deblur", str(source), "--server", url, "--tile", "72", "--tile-overlap", "16", "-o", str(tmp_path / "out")]
    assert cli_main(argv) == 0, capsys.readouterr().err
    photo = read_photo(source)
    write_photo(tmp_path / "local.png", photo, restore(network, photo.tensor(), tile=72, overlap=16, statistics="tile"))
    remote = np.asarray(Image.open(tmp_path / "out" / "coffee_deblurred.png")).astype(int)
    assert np.abs(remote - np.asarray(Image.open(tmp_path / "local.png")).astype(int)).max() <= 1


def test_a_bad_answer_is_named(served: tuple[str, BDIRNet], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = served
    source = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()[:40, :40]).save(source)
    (tmp_path / "answer.json").write_text('{"error_code": "BAD_REQUEST", "message": "shape mismatch"}')
    argv = ["serve-response", str(tmp_path / "answer.json"), "--photo", str(source), "-o", str(tmp_path / "r.png")]
    assert cli_main(argv) == 2
    assert "answer.json: no 'predictions' in the answer: shape mismatch" in capsys.readouterr().err
    assert cli_main(["deblur", str(source), "--server", "http://127.0.0.1:9", "-o", str(tmp_path / "o")]) == 1
    assert "cannot reach the server" in capsys.readouterr().err
    assert cli_main(["deblur", str(source), "--server", url, "--model", "x.pt"]) == 2
