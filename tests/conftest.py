"""Shared fixtures: real photos from scikit-image, as float RGB tensors in [0, 1]."""

from __future__ import annotations

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
