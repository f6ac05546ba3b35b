"""Shared fixtures. Real-data tests use ../shared/data/beir and the packaged model.

When the shared data is missing they skip locally but fail loudly under CI (CI=true).
Embeddings are cached in $DIVE_CACHE_DIR (default: <repo>/.cache/dive), so only the first
run encodes scifact (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIVE_DATA_DIR") or REPO.parent / "shared" / "data" / "beir")
os.environ.setdefault("DIVE_CACHE_DIR", str(REPO / ".cache" / "dive"))


def require_shared_data(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        message = f"real-data test needs {folder} (the shared BEIR data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def scifact():
    """(BeirDataset, Embeddings) of scifact with the packaged all-MiniLM-L6-v2."""
    from dive.data import load_beir
    from dive.encode import embed_dataset

    dataset = load_beir(require_shared_data("scifact"))
    return dataset, embed_dataset(dataset)


@pytest.fixture(scope="session")
def cranfield():
    from dive.data import load_beir
    from dive.encode import embed_dataset

    dataset = load_beir(require_shared_data("cranfield"))
    return dataset, embed_dataset(dataset)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance (2 logical CPUs) for every Ray test of the session."""
    ray = pytest.importorskip("ray") if os.environ.get("CI", "").lower() != "true" else __import__("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()

