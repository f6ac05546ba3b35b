"""Small helpers shared by every layer: seeding, atomic writes, hashing, versions, machine."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import random
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np

from dive.errors import DiveError


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run on CPU is repeatable bit for bit."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python, dive and the libraries that decide the numbers."""
    found = {"python": platform.python_version()}
    for package in ("dive-compress", "torch", "numpy", "faiss-cpu", "sentence-transformers",
                    "pytrec-eval-terrier", "pytorch-metric-learning", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine() -> str:
    """The machine this process runs on, e.g. ``x86_64, cpu, 2 cores, Linux 6.18.44``: recorded with
    every result, so a report names where its cells ran (not where it was rebuilt)."""
    return (f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}")


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or fail with the install command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DiveError(f"this needs {module.split('.')[0]}: pip install 'dive-compress[{extra}]'") from None


def configure_threads() -> int:
    """Let torch use every available core, unless ``OMP_NUM_THREADS`` asks for fewer.

    torch's default can be lower inside containers; an explicit ``OMP_NUM_THREADS`` (e.g. to
    run two jobs side by side without oversubscribing the cores) is respected.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    requested = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(requested) if requested.isdigit() and int(requested) > 0 else cores
    torch.set_num_threads(threads)
    return threads
