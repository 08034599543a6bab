"""Shared fixtures: real photos from scikit-image, as float RGB tensors in [0, 1]."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
def skimage_ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 15 bundled photos, ingested with the default split rules (size minimums off): read-only for tests."""
    from bdirnet.config import IngestConfig
    from bdirnet.datasets import bundle_skimage_photos, ingest_folder

    root = tmp_path_factory.mktemp("skimage")
    bundle_skimage_photos(root / "raw")
    ingest_folder(root / "raw", root / "ingested", IngestConfig(min_test_photos=0, min_val_photos=0))
    return root / "ingested"


@contextmanager
def local_ray(num_cpus: int) -> Iterator[None]:
    """A local Ray with ``num_cpus`` logical CPUs, its session files in a temp folder of its own."""
    from bdirnet.runtime import init_ray, shutdown_ray

    with tempfile.TemporaryDirectory(prefix="bdr-", dir="/tmp") as temp:
        saved = os.environ.get("BDIRNET_RAY_TMP")
        os.environ["BDIRNET_RAY_TMP"] = temp
        init_ray(num_cpus=num_cpus)
        try:
            yield
        finally:
            shutdown_ray()
            if saved is None:
                os.environ.pop("BDIRNET_RAY_TMP", None)
            else:
                os.environ["BDIRNET_RAY_TMP"] = saved


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs) for one test module."""
    with local_ray(2):
        yield


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
