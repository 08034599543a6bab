"""Export a network for runtimes without our code: ONNX (onnxruntime) and TorchScript, any batch, height and width.

- :class:`PadToMultiple`: the exported graph. It reflect-pads the image to the network's multiple (``2**levels``, as
  :meth:`bdirnet.model.BDIRNet._pad` does), restores, crops back and clamps to [0, 1], so any H×W works, odd and
  non-square included. The network inside then never sees a side it would have to pad itself, so the export does not
  bake in a shape-dependent branch.
- :func:`export_onnx` (``torch.onnx.export``, the ``torch.export``-based exporter, dynamic batch/height/width) and
  :func:`export_torchscript` (the network traced at a multiple, the pad/crop wrapper scripted around it).
- :func:`load_exported`: either file back as an :class:`ExportedNetwork`, a module :func:`bdirnet.deblur.restore` can
  tile with (ONNX runs in onnxruntime). Both files carry :data:`META_KEY` (JSON): the multiple, the activation bytes
  per pixel (for ``--max-memory``) and the model config.

Sides must be at least the multiple (reflect padding needs a side longer than the pad).

Example:
    >>> from bdirnet.export import export_onnx, load_exported  # doctest: +SKIP
    >>> export_onnx(network, Path("bdirnet.onnx"))  # doctest: +SKIP
    >>> restored = load_exported(Path("bdirnet.onnx"))(blurred)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdirnet.images import atomic_write

FORMATS = ("onnx", "torchscript")
META_KEY = "bdirnet"  # ONNX metadata_props key / TorchScript extra file name holding the export's JSON meta
EXPORT_FORMAT = "bdirnet-export"


class PadToMultiple(nn.Module):
    """``network`` at any H×W: reflect-pad to a multiple of ``multiple``, restore, crop back, clamp to [0, 1].

    Shape:
        - Input: :math:`(N, 3, H, W)` float32 in [0, 1], H and W at least ``multiple``.
        - Output: :math:`(N, 3, H, W)` in [0, 1].
    """

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, blurred: Tensor) -> Tensor:
        height, width = blurred.shape[-2], blurred.shape[-1]
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = F.pad(blurred, [0, pad_w, 0, pad_h], mode="reflect")
        restored: Tensor = self.network(padded)
        return restored[:, :, :height, :width].clamp(0.0, 1.0)


def network_multiple(network: nn.Module) -> int:
    """The side multiple a network pads to: ``network.multiple`` (BDIRNet), else ``2**config.levels``."""
    multiple = getattr(network, "multiple", None)
    if multiple is None:
        from bdirnet.weights import model_config_of

        multiple = 2 ** model_config_of(network).levels
    return int(multiple)


def export_meta(network: nn.Module) -> dict[str, Any]:
    """What an exported file records about its network (JSON-ready)."""
    from bdirnet.config import to_dict
    from bdirnet.deblur import activation_bytes_per_pixel

    config = getattr(network, "config", None)
    return {
        "format": EXPORT_FORMAT,
        "multiple": network_multiple(network),
        "activation_bytes_per_pixel": activation_bytes_per_pixel(network),
        "model_config": to_dict(config) if config is not None else None,
    }


def _example(multiple: int) -> Tensor:
    side = max(64, 4 * multiple)
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))


def export_onnx(network: nn.Module, path: Path) -> None:
    """Write ``network`` as a self-contained ONNX file (input ``blurred``, output ``restored``, dynamic batch, height
    and width), atomically."""
    network = network.cpu().eval()
    multiple = network_multiple(network)
    wrapper = PadToMultiple(network, multiple).eval()
    batch, height, width = (torch.export.Dim(name, min=lowest) for name, lowest in
                            (("batch", 1), ("height", multiple), ("width", multiple)))  # fmt: skip
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # not one "torchvision is not installed" warning per torchvision op
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                wrapper,
                (_example(multiple),),
                input_names=["blurred"],
                output_names=["restored"],
                dynamic_shapes={"blurred": {0: batch, 2: height, 3: width}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        logger.setLevel(level)
    if program is None:
        raise RuntimeError(f"{path}: torch.onnx.export returned no program")
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(export_meta(network), sort_keys=True)
    atomic_write(path, proto.SerializeToString())


def export_torchscript(network: nn.Module, path: Path) -> None:
    """Write ``network`` as a TorchScript archive: the network traced at a multiple-sized example (its convolutions
    and instance statistics are shape-generic), the pad/crop wrapper scripted around it, frozen; atomically."""
    network = network.cpu().eval()
    multiple = network_multiple(network)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; TorchScript still runs
        traced = torch.jit.trace(network, _example(multiple), check_trace=False)
        scripted = torch.jit.freeze(torch.jit.script(PadToMultiple(traced, multiple)).eval())
        buffer = io.BytesIO()
        extra = {META_KEY: json.dumps(export_meta(network), sort_keys=True)}
        torch.jit.save(scripted, buffer, _extra_files=extra)
    atomic_write(path, buffer.getvalue())


def export_network(network: nn.Module, path: Path, fmt: str) -> None:
    """Export in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "onnx":
        export_onnx(network, path)
    elif fmt == "torchscript":
        export_torchscript(network, path)
    else:
        raise ValueError(f"{path}: unknown export format {fmt!r}; expected one of {FORMATS}")


class ExportedNetwork(nn.Module):
    """A loaded export as a module: ``forward`` takes ``(N, 3, H, W)`` float in [0, 1] on any device and returns the
    restored batch on the same device. ONNX runs in onnxruntime on the CPU (autocast does not apply)."""

    def __init__(self, path: Path, meta: dict[str, Any], session: Any = None, script: Any = None) -> None:
        super().__init__()
        self.path = path
        self.meta = meta
        self.multiple = int(meta["multiple"])
        self.activation_bytes_per_pixel = float(meta["activation_bytes_per_pixel"])
        self.session = session
        self.script = script

    @property
    def kind(self) -> str:
        return "onnx" if self.session is not None else "torchscript"

    def forward(self, blurred: Tensor) -> Tensor:
        if blurred.shape[-2] < self.multiple or blurred.shape[-1] < self.multiple:
            raise ValueError(
                f"{self.path}: the exported model needs sides of at least {self.multiple} px, "
                f"got {tuple(blurred.shape[-2:])}"
            )
        if self.script is not None:
            restored: Tensor = self.script(blurred.float())
            return restored
        array = blurred.detach().to("cpu", torch.float32).contiguous().numpy()
        (output,) = self.session.run(["restored"], {"blurred": array})
        return torch.from_numpy(np.asarray(output)).to(blurred.device)


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``constants.pkl``); a weights file is a plain torch.save zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_exported(path: Path, threads: int | None = None) -> ExportedNetwork:
    """An exported ONNX file (by suffix ``.onnx``) or TorchScript archive, ready for :func:`bdirnet.deblur.restore`.

    Raises:
        FileNotFoundError / ValueError: naming the file: missing, unreadable, or not a ``bdirnet export`` file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    if path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... kinds
            raise ValueError(f"{path}: not a loadable ONNX model ({type(error).__name__}: {error})") from None
        text = session.get_modelmeta().custom_metadata_map.get(META_KEY)
        return ExportedNetwork(path, _parse_meta(path, text), session=session)
    extra = {META_KEY: ""}
    try:
        script = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError/ValueError of many kinds for a bad archive
        raise ValueError(f"{path}: not a loadable TorchScript archive ({type(error).__name__}: {error})") from None
    return ExportedNetwork(path, _parse_meta(path, extra[META_KEY] or None), script=script.eval())


def _parse_meta(path: Path, text: str | bytes | None) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a `bdirnet export` file (no {META_KEY!r} metadata)")
    return meta
