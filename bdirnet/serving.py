"""Talk to ``mlflow models serve -m models:/bdirnet@champion``: the JSON a client sends and what comes back.

A registered version is an ``mlflow.pytorch`` model whose pyfunc takes one unnamed float32 tensor ``(N, 3, H, W)``
(:func:`bdirnet.registry.log_and_register_model`), so the request is ``{"inputs": [[[[r, ...], ...], ...]]}``: the
image as nested lists, channels first, values in [0, 1]; the answer is ``{"predictions": <the same layout>}``.

- :func:`request_body` / :func:`parse_response`: tensor -> request JSON, response JSON -> tensor.
- :class:`RemoteNetwork`: a server as a module :func:`bdirnet.deblur.restore` can tile with (one request per tile).

Example (the README's curl line)::

    bdirnet serve-request photo.jpg > request.json
    curl -s -H 'Content-Type: application/json' --data @request.json http://127.0.0.1:5001/invocations > response.json
    bdirnet serve-response response.json --photo photo.jpg -o restored.png
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import torch
from torch import Tensor, nn

DECIMALS = 6  # an 8-bit value k/255 (or a 16-bit k/65535) survives to float32 precision; ~8 bytes per value


def request_body(image: Tensor) -> bytes:
    """The JSON request for ``image`` ``(N, 3, H, W)`` float in [0, 1]."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"request: expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
    values = np.round(image.detach().to("cpu", torch.float64).numpy(), DECIMALS).tolist()
    return json.dumps({"inputs": values}, separators=(",", ":")).encode()


def parse_response(body: bytes, where: str = "response") -> Tensor:
    """The restored ``(N, 3, H, W)`` float32 tensor of a server's JSON answer.

    Raises:
        ValueError: naming ``where`` when the body is not JSON, is an error answer, or has no image in it.
    """
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where}: not a JSON answer ({error})") from None
    if not isinstance(answer, dict) or "predictions" not in answer:
        detail = answer.get("message", "") if isinstance(answer, dict) else ""
        raise ValueError(f"{where}: no 'predictions' in the answer{': ' + str(detail)[:300] if detail else ''}")
    try:
        restored = torch.tensor(answer["predictions"], dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: 'predictions' is not a rectangular array ({error})") from None
    if restored.ndim != 4 or restored.shape[1] != 3:
        raise ValueError(f"{where}: expected predictions of shape (N, 3, H, W), got {tuple(restored.shape)}")
    return restored


class RemoteNetwork(nn.Module):
    """A ``mlflow models serve`` endpoint as a module: ``forward`` posts the batch to ``<url>/invocations``."""

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def forward(self, blurred: Tensor) -> Tensor:
        endpoint = f"{self.url}/invocations"
        request = urllib.request.Request(endpoint, request_body(blurred), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
            message = parse_error(body)
            raise ValueError(f"{endpoint}: HTTP {error.code}{': ' + message if message else ''}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ValueError(f"{endpoint}: cannot reach the server ({reason})") from None
        restored = parse_response(body, endpoint)
        if restored.shape != blurred.shape:
            raise ValueError(f"{endpoint}: answered shape {tuple(restored.shape)} for {tuple(blurred.shape)}")
        return restored.to(blurred.device)


def parse_error(body: bytes) -> str:
    """The ``message`` of an MLflow error answer (first line), or ''."""
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    return str(answer.get("message", "")).splitlines()[0][:300] if isinstance(answer, dict) else ""
