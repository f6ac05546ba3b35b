"""Find a dataset folder by name, downloading BEIR's official archive when it is missing.

Resolution order for ``--dataset NAME``: ``--data-dir``, then ``$DIVE_DATA_DIR``, then the
user cache (``$DIVE_CACHE_DIR/datasets`` or the platform cache dir). Only BEIR's public
datasets are downloaded; anything else must already be on disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import platformdirs
from tqdm.auto import tqdm

from dive.errors import DiveError

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
"""Where BEIR (Thakur et al., NeurIPS 2021 Datasets track) publishes one ``NAME.zip`` per dataset."""

BEIR_SPLITS: dict[str, tuple[str, ...]] = {
    "msmarco": ("train", "dev", "test"),
    "trec-covid": ("test",),
    "nfcorpus": ("train", "dev", "test"),
    "nq": ("test",),
    "hotpotqa": ("train", "dev", "test"),
    "fiqa": ("train", "dev", "test"),
    "arguana": ("test",),
    "webis-touche2020": ("test",),
    "cqadupstack": ("test",),
    "quora": ("dev", "test"),
    "dbpedia-entity": ("dev", "test"),
    "scidocs": ("test",),
    "fever": ("train", "dev", "test"),
    "climate-fever": ("test",),
    "scifact": ("train", "test"),
}
"""BEIR's public datasets and the qrels splits each archive ships (BEIR README, Table 1)."""


def cache_dir() -> Path:
    """Root of dive's caches: ``$DIVE_CACHE_DIR`` or the platform's user cache dir."""
    return Path(os.environ.get("DIVE_CACHE_DIR") or platformdirs.user_cache_dir("dive"))


def _is_dataset(folder: Path) -> bool:
    return folder.is_dir() and (folder / "qrels").is_dir() and any(folder.glob("corpus.jsonl*"))


def resolve_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return the folder holding dataset ``name``, downloading it from BEIR if allowed and needed."""
    as_path = Path(name).expanduser()
    if _is_dataset(as_path):
        return as_path
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("DIVE_DATA_DIR"):
        roots.append(Path(os.environ["DIVE_DATA_DIR"]))
    roots.append(cache_dir() / "datasets")
    for root in roots:
        if _is_dataset(root / name):
            return root / name
    if name not in BEIR_SPLITS:
        searched = ", ".join(str(root) for root in roots)
        raise DiveError(f"dataset {name!r} not found under {searched}, and it is not one of BEIR's "
                        f"public datasets ({', '.join(sorted(BEIR_SPLITS))})")
    if not download:
        raise DiveError(f"dataset {name!r} not found under {roots[0]}")
    target_root = roots[0] if data_dir else cache_dir() / "datasets"
    return download_beir(name, target_root)


def download_beir(name: str, target_root: str | Path, base_url: str | None = None) -> Path:
    """Download and unpack BEIR's ``NAME.zip`` into ``target_root/NAME``, atomically.

    ``base_url`` (or ``$DIVE_BEIR_URL``) replaces BEIR's server, e.g. with a mirror or a
    ``file://`` folder for offline tests.
    """
    base = (base_url or os.environ.get("DIVE_BEIR_URL") or BEIR_BASE_URL).rstrip("/")
    url = f"{base}/{name}.zip"
    target_root = Path(target_root)
    target_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_root, prefix=f".{name}-download-") as scratch:
        archive = Path(scratch) / f"{name}.zip"
        _fetch(url, archive)
        unpacked = Path(scratch) / "unpacked"
        try:
            with zipfile.ZipFile(archive) as bundle:
                _safe_extract(bundle, unpacked)
        except zipfile.BadZipFile:
            raise DiveError(f"{url}: not a zip archive") from None
        source = unpacked / name
        if not _is_dataset(source):
            raise DiveError(f"{url}: archive has no {name}/corpus.jsonl and qrels/ folder")
        destination = target_root / name
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(source, destination)
    return destination


def _fetch(url: str, destination: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {url.rsplit('/', 1)[-1]}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as error:
        raise DiveError(f"{url}: download failed ({error})") from None


def _safe_extract(bundle: zipfile.ZipFile, destination: Path) -> None:
    """Extract, refusing members that would land outside ``destination`` (zip-slip)."""
    root = destination.resolve()
    for member in bundle.infolist():
        target = (destination / member.filename).resolve()
        if root != target and root not in target.parents:
            raise DiveError(f"archive member {member.filename!r} escapes the target folder")
    bundle.extractall(destination)
