"""`mlflow models serve` latency: a weights file registered into a temporary SQLite store (with its ONNX export, as the
register stage does), served with ``--env-manager local`` on loopback, one photo-sized request at a time; beside the
same restoration in this process (eager) and the time to build and parse the JSON.

    python bench/serve_latency.py --weights models/bdirnet-s1.pt [--sizes 256 512 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from bdirnet import registry
from bdirnet.serving import parse_response, request_body
from bdirnet.weights import file_sha256, load_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    network, _ = load_weights(args.weights)
    with tempfile.TemporaryDirectory(prefix="bdirnet-serve-") as folder:
        root = Path(folder)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)
        started = time.perf_counter()
        registration = registry.ensure_registered(
            uri, file_sha256(Path(args.weights)), lambda: load_weights(args.weights)[0],
            Path(registry.__file__).parent, {}, run_id=None, run_name="serve-bench", params={},
        )  # fmt: skip
        print(f"register (with the ONNX export): {time.perf_counter() - started:.1f}s")
        registry.set_alias(uri, "champion", registration.version)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true")
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bdirnet@champion",
                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        log = (root / "serve.log").open("wb")
        started = time.perf_counter()
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.perf_counter() - started > 180:
                        raise SystemExit((root / "serve.log").read_text()[-2000:]) from None
                    time.sleep(0.3)
            print(f"server up (/ping) after {time.perf_counter() - started:.1f}s")
            print(f"{'size':>6}{'request MB':>12}{'encode s':>10}{'served s':>10}{'decode s':>10}{'eager s':>9}")
            for size in args.sizes:
                image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
                started = time.perf_counter()
                body = request_body(image)
                encode = time.perf_counter() - started
                served, decode = float("inf"), 0.0
                for _ in range(args.repeats):
                    post = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
                    started = time.perf_counter()
                    with urllib.request.urlopen(post, timeout=600) as answer:
                        raw = answer.read()
                    served = min(served, time.perf_counter() - started)
                    started = time.perf_counter()
                    restored = parse_response(raw)
                    decode = time.perf_counter() - started
                eager = float("inf")
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    expected = network(image)
                    eager = min(eager, time.perf_counter() - started)
                error = float((restored - expected).abs().max())
                print(f"{size:>6}{len(body) / 1e6:>12.1f}{encode:>10.2f}{served:>10.2f}{decode:>10.2f}{eager:>9.2f}"
                      f"   max |served - eager| {error:.1e}")  # fmt: skip
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
            log.close()


if __name__ == "__main__":
    main()
