"""Small helpers shared by every layer: seeding, atomic writes, hashing, versions, machine."""

from __future__ import annotations

import errno
import glob
import hashlib
import importlib
import json
import logging
import os
import platform
import random
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np

from dive.errors import DiveError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run on CPU is repeatable bit for bit."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure to create, fill or rename the file (a folder in the way, a read-only or full disk)
    is one ``DiveError`` naming ``path``, and leaves nothing behind: neither the temp file nor the
    parent folders made for it. Temp files that killed runs left beside ``path`` are removed first
    (see :func:`remove_stale_temps`).
    """
    path = Path(path)
    created, tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if not _is_write_error(error, tmp, path):
            raise
        raise DiveError(f"cannot write {path}: {_reason(error)}") from None
    finally:
        if os.path.lexists(tmp):
            tmp.unlink(missing_ok=True)
            _remove_empty(created)


def _create_temp(path: Path) -> tuple[list[Path], Path]:
    """Make ``path``'s missing parents and an empty temp file beside it; return (parents made, temp)."""
    created: list[Path] = []
    tmp: Path | None = None
    try:
        if path.is_dir():
            raise DiveError(f"cannot write {path}: not a file (a folder is in the way)")
        created = _make_parents(path)
        remove_stale_temps(path)
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        return created, tmp
    except (OSError, DiveError) as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(error, DiveError):
            raise
        raise DiveError(f"cannot write {path}: {_reason(error)}") from None


TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 24 * 3600
"""A temp file this old is stale even if a process with its pid runs (pids are reused)."""
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
"""Errors that only a write raises: inside an atomic write they are the output's, whichever call hit them."""


def temp_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: a hidden temp name beside ``path`` that says which process made it."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temp files (or folders) of dive's naming beside ``path`` whose process is gone or
    that are older than :data:`STALE_TEMP_SECONDS`; return what was removed.

    A temp file outlives its process only if the process was killed (SIGKILL, power loss): every
    other ending removes it. The pid is only checked for temps made on this host.
    """
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        owner = _temp_owner(candidate.name[len(path.name) + 2:-len(TEMP_SUFFIX)])
        if owner is None or not _is_stale(candidate, owner):
            continue
        try:
            shutil.rmtree(candidate) if candidate.is_dir() and not candidate.is_symlink() else candidate.unlink()
        except OSError:  # another run removed it first, or it cannot be removed: not this run's concern
            continue
        log.info("removed %s, left by a killed run", candidate)
        removed.append(candidate)
    return removed


def _temp_owner(middle: str) -> tuple[str, int | None] | None:
    """(host, pid) from the ``HOST-PID.RANDOM`` middle of a temp name; ("", None) for the older
    ``RANDOM`` naming (no owner recorded: stale by age only); None if not dive's naming."""
    if LEGACY_TEMP_MIDDLE.fullmatch(middle):
        return "", None
    owner, _, random_part = middle.rpartition(".")
    host, _, pid = owner.rpartition("-")
    if not host or not pid.isdigit() or not random_part:
        return None
    return host, int(pid)


LEGACY_TEMP_MIDDLE = re.compile(r"[a-z0-9_]{8}")
"""The random part :func:`tempfile.mkstemp` makes: temp files of dive before names recorded their process."""


def _is_stale(candidate: Path, owner: tuple[str, int | None]) -> bool:
    try:
        age = time.time() - candidate.lstat().st_mtime
    except OSError:
        return False
    host, pid = owner
    return age > STALE_TEMP_SECONDS or (pid is not None and host == _host() and not _process_exists(pid))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _host() -> str:
    """This machine's name, reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; return them, deepest first (to undo on failure)."""
    blocker = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        raise DiveError(f"cannot write {path}: {blocker} is not a folder")
    missing = [parent for parent in path.parents if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        _remove_empty(missing)
        raise
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder someone else has filled meanwhile stays
        try:
            folder.rmdir()
        except OSError:
            return


def _is_write_error(error: OSError, tmp: Path, path: Path) -> bool:
    return error.errno in WRITE_ERRNOS or error.filename in (str(tmp), str(path))


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


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


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads() -> int:
    """Let torch use every available core, unless ``OMP_NUM_THREADS`` asks for fewer.

    torch's default can be lower inside containers; an explicit ``OMP_NUM_THREADS`` (e.g. to
    run two jobs side by side without oversubscribing the cores) is respected.
    """
    import torch

    cores = available_cores()
    requested = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(requested) if requested.isdigit() and int(requested) > 0 else cores
    torch.set_num_threads(threads)
    return threads
