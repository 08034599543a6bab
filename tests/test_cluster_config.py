"""ray_cluster.yaml is a valid cluster-launcher config: Ray's own schema (the one `ray up` checks) accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster() -> dict[str, object]:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_valid_against_rays_schema(cluster: dict[str, object]) -> None:
    validate_config(cluster)
    validate_config(prepare_config(cluster))  # as `ray up` does: AWS defaults filled in, then validated


def test_pins_our_ray_version_and_gpu_spot_workers(cluster: dict[str, object]) -> None:
    lock = (REPO / "requirements.lock").read_text().splitlines()
    ray_version = next(line.split("==")[1] for line in lock if line.startswith("ray=="))
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{ray_version}-")  # type: ignore[index]
    worker = cluster["available_node_types"]["gpu_worker"]  # type: ignore[index]
    assert worker["min_workers"] == 0
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert worker["node_config"]["InstanceType"].startswith(("g5.", "g6."))
    assert "IamInstanceProfile" in worker["node_config"]
    assert cluster["idle_timeout_minutes"] > 0


def test_schema_rejects_a_broken_config(cluster: dict[str, object]) -> None:
    broken = dict(cluster)
    broken["max_workers"] = "many"
    with pytest.raises(Exception, match="many"):
        validate_config(broken)
