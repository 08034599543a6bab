"""Shared fixtures: real photos from scikit-image, as float RGB tensors in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from skimage import data


def photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo as a (1, 3, H, W) float32 tensor in [0, 1]."""
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return torch.from_numpy(image[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    return photo("astronaut")


@pytest.fixture(scope="session")
def coffee() -> torch.Tensor:
    return photo("coffee")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for the whole session, with bucket ``bdirnet-test``; sets the AWS env."""
    from bdirnet import storage

    from .s3server import CREDENTIALS, moto_server

    saved = {key: os.environ.get(key) for key in (*CREDENTIALS, "AWS_ENDPOINT_URL")}
    os.environ.update(CREDENTIALS)
    with moto_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        storage.ensure_bucket("bdirnet-test")
        yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
