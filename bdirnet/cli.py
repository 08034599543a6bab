"""The ``bdirnet`` command.

- ``bdirnet table [reports/robustness.json]``: the study's variant × family PSNR matrix (or, given one run's
  ``eval.json``, its per-family table).
- ``bdirnet data push FOLDER s3://...`` / ``bdirnet data pull s3://... FOLDER``: move a raw dataset folder to and
  from S3 (boto3; ``AWS_ENDPOINT_URL`` for S3-compatible servers), skipping unchanged files.
- ``bdirnet deblur INPUT... -o OUTDIR``: restore your own photos (files, folders, globs) with the champion (or
  ``--model``), tiled to fit ``--max-memory``; one line per bad file, exit code 1 when any failed.
- ``bdirnet export --format onnx|torchscript --model SPEC -o FILE``: the model for onnxruntime or TorchScript, any
  batch and H×W (the graph pads to the network's multiple and crops back); ``bdirnet deblur --model FILE`` runs it.
- ``bdirnet serve-request photo.jpg > request.json`` / ``bdirnet serve-response response.json --photo photo.jpg -o
  restored.png``: the JSON body for ``mlflow models serve`` and the restored photo from its answer (EXIF, ICC, alpha,
  grayscale and bit depth of the original); ``bdirnet deblur --server URL`` sends every photo (or tile) itself.
- ``bdirnet with-ray -- dvc repro``: run a command with one local Ray head that all its stages join
  (``RAY_ADDRESS``), stopped at the end, on failure and on Ctrl-C; ``scripts/study.sh`` uses it.
- ``bdirnet set-params params.quick.yaml``: the file's overrides as ``dvc exp run`` arguments, one per line
  (``-S``, ``train.max_epochs=1``, ...); ``scripts/study.sh --quick`` uses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bdirnet.evaluation import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bdirnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="print the PSNR matrix of reports/robustness.json (or an eval.json)")
    table.add_argument("report", type=Path, nargs="?", default=Path("reports/robustness.json"))
    data = commands.add_parser("data", help="move a raw dataset folder to or from S3 (for users without DVC)")
    direction = data.add_subparsers(dest="direction", required=True)
    push = direction.add_parser("push", help="upload a folder: bdirnet data push data/raw/mine s3://bucket/raw/mine")
    push.add_argument("folder", type=Path)
    push.add_argument("uri")
    pull = direction.add_parser("pull", help="download a folder: bdirnet data pull s3://bucket/raw/mine data/raw/mine")
    pull.add_argument("uri")
    pull.add_argument("folder", type=Path)
    deblur = commands.add_parser("deblur", help="restore your own photos: bdirnet deblur my_photo.jpg -o restored/")
    deblur.add_argument("inputs", nargs="+", help="photo files, folders (their photos) or globs")
    deblur.add_argument("-o", "--out", type=Path, default=Path("restored"), help="output folder (default: restored/)")
    model_help = ("models:/bdirnet@<alias>, models:/bdirnet/<version>, a weights file models/<run>.pt, "
                  "or a file of bdirnet export (.onnx, TorchScript .pt)")  # fmt: skip
    deblur.add_argument("--model", default=None, help=model_help + " (default: models:/bdirnet@champion)")
    deblur.add_argument("--server", default=None, help="restore on `mlflow models serve` at this URL")
    deblur.add_argument("--tile", type=int, default=None, help="tile size in px (default: from --max-memory)")
    deblur.add_argument("--tile-overlap", type=int, default=32, help="overlap of neighbouring tiles in px")
    deblur.add_argument("--statistics", choices=("auto", "image", "tile"), default="auto",
                        help="tiles normalise with the whole image's statistics (image: as untiled, one pass per "
                        "SAID/SAIR layer) or their own (tile: one pass); auto: image for a torch model")  # fmt: skip
    deblur.add_argument("--max-memory", type=float, default=2.0, help="memory budget in GiB for automatic tiling")
    deblur.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    deblur.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on AMX CPUs and recent GPUs)")
    deblur.add_argument("--suffix", default="_deblurred", help="added to each output name (default: _deblurred)")
    deblur.add_argument("--ext", default=None, help="output format by extension, e.g. png (default: the input's)")
    export = commands.add_parser("export", help="export a model: bdirnet export --format onnx -o bdirnet.onnx")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--model", default="models:/bdirnet@champion", help=model_help)
    export.add_argument("-o", "--out", type=Path, required=True, help="the file to write (e.g. bdirnet.onnx)")
    serve_request = commands.add_parser("serve-request", help="the JSON body for mlflow models serve: photo -> stdout")
    serve_request.add_argument("photo", type=Path)
    serve_request.add_argument("-o", "--out", type=Path, default=None, help="write here instead of stdout")
    serve_response = commands.add_parser("serve-response", help="the restored photo from a served model's answer")
    serve_response.add_argument("response", type=Path, help="the server's JSON answer (curl ... > response.json)")
    serve_response.add_argument("--photo", type=Path, required=True, help="the photo the request was made from")
    serve_response.add_argument("-o", "--out", type=Path, required=True, help="the restored photo to write")
    set_params = commands.add_parser("set-params", help="print a YAML overrides file as dvc exp run -S arguments")
    set_params.add_argument("overrides", type=Path)
    set_params.add_argument("--base", type=Path, default=Path("params.yaml"), help="the params every key must exist in")
    with_ray = commands.add_parser("with-ray", help="run a command in one local Ray session: with-ray -- dvc repro")
    with_ray.add_argument("argv", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    if args.command == "with-ray":
        from bdirnet.runtime import run_in_ray_session

        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("with-ray: give the command after --, e.g. bdirnet with-ray -- dvc repro")
        return run_in_ray_session(command)
    if args.command == "deblur":
        return deblur_command(args)
    if args.command == "export":
        return export_command(args)
    if args.command in ("serve-request", "serve-response"):
        return serve_command(args)
    if args.command == "set-params":
        from bdirnet.config import ConfigError, set_param_arguments

        try:
            print("\n".join(set_param_arguments(args.overrides, args.base)))
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "data":
        from bdirnet import storage

        try:
            if args.direction == "push":
                report = storage.upload_folder(args.folder, args.uri)
            else:
                report = storage.download_folder(args.uri, args.folder)
        except (storage.StorageError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{args.direction}: {report.transferred} files ({report.bytes / 1e6:.1f} MB) moved, "
              f"{report.skipped} unchanged")  # fmt: skip
        return 0
    if args.command == "table":
        try:
            report = json.loads(args.report.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # ValueError: JSON or UTF-8 decoding
            print(f"error: {args.report}: cannot read the report ({error})", file=sys.stderr)
            return 2
        try:
            if isinstance(report, dict) and "variants" in report:
                from bdirnet.robustness import format_matrix

                print(format_matrix(report))
                print(report.get("promotion", {}).get("decision", ""))
            elif isinstance(report, dict) and "families" in report:
                model = report["model"]
                print(format_table(report["families"], f"{model['name']} v{model['version']} (PSNR dB, SSIM)"))
            else:
                print(f"error: {args.report}: neither a robustness nor an eval report", file=sys.stderr)
                return 2
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as error:
            print(f"error: {args.report}: malformed report ({type(error).__name__}: {error})", file=sys.stderr)
            return 2
    return 0


def collect_inputs(specs: list[str]) -> tuple[list[Path], list[str]]:
    """The photo files named by files, folders (recursively) and globs, in order, once each; and the specs that
    named nothing."""
    import glob

    from bdirnet.deblur import PHOTO_SUFFIXES

    found: list[Path] = []
    missing: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            missing.append(spec)
        found += [m for m in matches if m not in found]
    return found, missing


def export_command(args: argparse.Namespace) -> int:
    """``bdirnet export``: load ``--model`` and write it as ONNX or TorchScript."""
    import time

    from bdirnet.deblur import load_network
    from bdirnet.export import ExportedNetwork, export_network

    try:
        network = load_network(args.model)
        if isinstance(network, ExportedNetwork):
            raise ValueError(f"{args.model}: already an exported model; export a weights file or a registry version")
        started = time.perf_counter()
        export_network(network, args.out, args.format)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size_mb = args.out.stat().st_size / 1e6
    print(f"export: {args.model} -> {args.out} ({args.format}, {size_mb:.1f} MB, {time.perf_counter() - started:.1f}s)")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """``bdirnet serve-request`` / ``serve-response``: a photo to the JSON a served model takes, and its answer back
    to a photo in the original's layout and metadata."""
    from bdirnet.deblur import read_photo, write_photo
    from bdirnet.images import atomic_write
    from bdirnet.serving import parse_response, request_body

    try:
        if args.command == "serve-request":
            body = request_body(read_photo(args.photo).tensor())
            if args.out is None:
                sys.stdout.buffer.write(body + b"\n")
            else:
                atomic_write(args.out, body)
            return 0
        photo = read_photo(args.photo)
        restored = parse_response(args.response.read_bytes(), str(args.response))
        expected = tuple(photo.tensor().shape)
        if tuple(restored.shape) != expected:
            raise ValueError(f"{args.response}: restored shape {tuple(restored.shape)}, but {args.photo} is {expected}")
        write_photo(args.out, photo, restored.clamp(0, 1))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"serve-response: {args.response} -> {args.out}")
    return 0


def deblur_command(args: argparse.Namespace) -> int:
    """``bdirnet deblur``: restore every photo; a bad file gets one line and the others go on."""
    import time

    import torch
    from tqdm import tqdm

    from bdirnet.deblur import (
        activation_bytes_per_pixel,
        load_network,
        read_photo,
        restore,
        tile_for_memory,
        write_photo,
    )

    photos, missing = collect_inputs(args.inputs)
    for spec in missing:
        print(f"error: {spec}: no such file, folder or matching photo", file=sys.stderr)
    if not photos:
        return 2
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device here", file=sys.stderr)
        return 2
    from bdirnet.export import ExportedNetwork
    from bdirnet.serving import RemoteNetwork

    if args.server and (args.model or args.bf16):
        print("error: --server restores on the server: drop --model and --bf16", file=sys.stderr)
        return 2
    try:
        network = RemoteNetwork(args.server) if args.server else load_network(args.model or "models:/bdirnet@champion")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.bf16 and isinstance(network, ExportedNetwork):
        print(f"error: --bf16: {args.model} is an exported float32 model; drop --bf16", file=sys.stderr)
        return 2
    # Once per network, not once per photo; a server restores whole photos unless --tile says otherwise.
    per_pixel = None if args.server else activation_bytes_per_pixel(network)
    failed: list[str] = []
    seconds_total = 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    progress = tqdm(photos, unit="photo", file=sys.stderr, disable=not sys.stderr.isatty())
    for path in progress:
        ext = f".{args.ext.lstrip('.').lower()}" if args.ext else path.suffix.lower()
        target = args.out / f"{path.stem}{args.suffix}{ext}"
        if target.resolve() == path.resolve():
            failed.append(str(path))
            print(f"error: {path}: the output would overwrite the input (set -o or --suffix)", file=sys.stderr)
            continue
        try:
            started = time.perf_counter()
            photo = read_photo(path)
            image = photo.tensor()
            height, width = image.shape[-2:]
            budget = int(args.max_memory * 2**30)
            tile = args.tile or (tile_for_memory(network, height, width, budget, per_pixel) if per_pixel else None)
            restored = restore(network, image, tile=tile, overlap=args.tile_overlap, device=device, bf16=args.bf16,
                               statistics=args.statistics)  # fmt: skip
            write_photo(target, photo, restored)
            seconds = time.perf_counter() - started
        except (ValueError, OSError) as error:
            failed.append(str(path))
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            progress.write(f"error: {message}", file=sys.stderr)
            continue
        seconds_total += seconds
        tiles = f", {tile} px tiles" if tile else ""
        progress.write(f"{path} -> {target} ({width}×{height}{tiles}, {seconds:.1f}s)")
    done = len(photos) - len(failed)
    print(f"deblur: {done} of {len(photos)} photos restored in {seconds_total:.1f}s to {args.out}"
          + (f"; {len(failed)} failed" if failed else ""))  # fmt: skip
    return 1 if failed or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
