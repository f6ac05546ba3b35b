"""Ray set-up shared by ``dive compress --engine ray`` and ``dive embed --engine ray``.

``address=None`` joins a running local instance or starts one; ``"auto"`` or
``"ray://head:10001"`` runs the same job on a cluster (every node needs dive installed, and
the pipeline or model folder at the same path, e.g. on shared storage).
"""

from __future__ import annotations

from typing import Any

from dive.errors import DiveError
from dive.utils import require


def start_ray(address: str | None, workers: int) -> Any:
    """Initialise Ray (once); check ``workers`` leave a CPU for reading the input."""
    ray = require("ray", "ray")
    if workers < 1:
        raise DiveError("Ray workers must be at least 1")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers >= cpus:
        raise DiveError(f"{workers} Ray workers leave none of the cluster's {cpus} CPUs for reading the input "
                        f"(Ray Data would wait forever); use at most {max(cpus - 1, 0)}")
    return ray
