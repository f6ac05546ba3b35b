"""A pipeline = a fitted compression method + an optional post-hoc codec, saved as one folder.

``pipeline.json`` names the parts; ``method/`` and ``codec/`` are ordinary saved folders
(JSON + safetensors, checksum verified), so loading a pipeline never executes code.
``pipeline.json`` is written last and records the SHA-256 of each part's ``config.json`` (which
in turn records its payload's), so a save cut short is never loaded as a pipeline: without the
manifest the folder is refused as incomplete, and a previous manifest no longer matches the
rewritten parts. Loading verifies each file against its recorded checksum before parsing it
(:mod:`dive.saved`), so an edited ``config.json`` never reaches a constructor, and a manifest
without checksums is refused rather than loaded unchecked.
Bytes per vector are the codec's when there is one, else float32 storage of the method's output.

``pipeline.json`` also records the pipeline's facts: ``base_model``, the
:class:`~dive.identity.ModelIdentity` of the vectors it was fitted on (model folder, SHA-256 of
its files, prompts), which ``export``, ``compress``, ``index`` and ``evaluate`` check; and
``evaluation``, the metrics ``dive train`` measured and their protocol, from which ``dive export``
writes the model card. A pipeline saved by an older dive has neither: it loads, and the checks
warn that nothing was compared (see :mod:`dive.identity`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dive import __version__
from dive.config import to_dict
from dive.data.sets import EvalSet
from dive.errors import DiveError, short_repr
from dive.evaluate import evaluate_searcher
from dive.identity import ModelIdentity, check_same_model
from dive.methods import Method, load_method
from dive.quantize import Codec, load_codec
from dive.saved import CONFIG_FILE, file_sha256, read_record
from dive.search import FlatSearch, Searcher, TransformedSearch
from dive.utils import write_json

PIPELINE_FILE = "pipeline.json"
METHOD_FOLDER = "method"
CODEC_FOLDER = "codec"
FORMAT = "dive-pipeline/1"
FLOAT32_BYTES = 4


@dataclass
class Pipeline:
    """Compress with ``method``, then (optionally) encode with ``codec``.

    ``base_model``: what made the vectors it was fitted on (None: unknown, e.g. an older save).
    ``evaluation``: what was measured when it was trained (dataset, protocol, metrics), or None.
    """

    method: Method
    codec: Codec | None = None
    base_model: ModelIdentity | None = None
    evaluation: dict[str, Any] | None = None

    def check_base_model(self, actual: ModelIdentity | None, actual_what: str, prompts: bool = True) -> None:
        """Refuse vectors or a model (``actual``) that are not this pipeline's base model, naming both."""
        check_same_model(self.base_model, actual, "the pipeline was fitted on", actual_what, prompts)

    @property
    def bytes_per_vector(self) -> float:
        if self.codec is not None:
            return float(self.codec.bytes_per_vector)
        return float(FLOAT32_BYTES * self.method.output_dim)

    def describe(self) -> dict[str, Any]:
        codec = None
        if self.codec is not None:
            codec = {"name": self.codec.name, "config": to_dict(self.codec.config)}
        return {"method": self.method.name, "dim": self.method.output_dim, "codec": codec,
                "bytes_per_vector": self.bytes_per_vector}

    def fit_codec(self, codec: Codec, corpus_vectors: np.ndarray) -> "Pipeline":
        """Calibrate ``codec`` on the method's output for the corpus."""
        self.codec = codec.fit(self.method.transform(corpus_vectors))
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """The method's float output (what the codec, if any, encodes)."""
        return self.method.transform(vectors)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """What is stored per vector: codec codes, or the float32 output without a codec."""
        compressed = self.transform(vectors)
        return compressed if self.codec is None else self.codec.encode(compressed)

    def searcher(self, corpus_vectors: np.ndarray) -> Searcher:
        """A :class:`~dive.search.Searcher` over frozen ``corpus_vectors`` stored as the pipeline stores
        them (codec codes, or float32 output), taking frozen query vectors: they go through the method
        and stay float (asymmetric search against the codes)."""
        stored = self.encode(corpus_vectors)
        searcher = FlatSearch.from_vectors(stored) if self.codec is None else self.codec.searcher(stored)
        return TransformedSearch(self.transform, searcher)

    def evaluate(self, eval_set: EvalSet, ks: tuple[int, ...]) -> dict[str, float]:
        """nDCG@k / Recall@k with queries through the method (kept float) and documents stored as codes."""
        return evaluate_searcher(self.searcher(eval_set.doc_vectors), eval_set.query_vectors, eval_set, ks)

    def save(self, directory: str | Path) -> Path:
        """Write ``method/``, ``codec/`` and, last, ``pipeline.json`` (the commit point) into ``directory``."""
        directory = Path(directory)
        had_manifest = (directory / PIPELINE_FILE).exists()
        parts = {METHOD_FOLDER: self.method, CODEC_FOLDER: self.codec}
        try:
            checksums = {}
            for folder, part in parts.items():
                if part is None:
                    shutil.rmtree(directory / folder, ignore_errors=True)
                    continue
                part.save(directory / folder)
                checksums[folder] = file_sha256(directory / folder / CONFIG_FILE)
            folders = {name: (name if part is not None else None) for name, part in parts.items()}
            base_model = self.base_model.to_dict() if self.base_model is not None else None
            write_json(directory / PIPELINE_FILE, {"format": FORMAT, "dive_version": __version__, **self.describe(),
                                                   "base_model": base_model, "evaluation": self.evaluation,
                                                   "folders": folders, "checksums": checksums})
        except BaseException:
            if not had_manifest:  # nothing of a half-written new pipeline is left behind
                for folder in parts:
                    shutil.rmtree(directory / folder, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_sha256: str | None = None, mismatch: str = "") -> "Pipeline":
        """A saved pipeline folder, or a bare saved method folder (a pipeline without codec).

        Each file is verified before it is parsed: ``pipeline.json`` records the checksum of each
        part's ``config.json``, which records its payload's. With ``expected_sha256`` (an index
        records it, see :func:`saved_sha256`), the folder's own record must have that checksum,
        else the load is refused with ``mismatch``.
        """
        directory = Path(directory)
        manifest_path = directory / PIPELINE_FILE
        if not os.path.lexists(manifest_path):
            if (directory / METHOD_FOLDER).is_dir():
                raise DiveError(f"{directory}: incomplete pipeline (no {PIPELINE_FILE}; its save was interrupted)")
            return cls(load_method(directory, expected_sha256, mismatch))
        manifest = read_record(manifest_path, FORMAT, expected_sha256, mismatch)
        checksums = _part_checksums(manifest_path, manifest)
        method = load_method(directory / METHOD_FOLDER, *_part_checksum(directory, checksums, METHOD_FOLDER))
        codec = None
        if CODEC_FOLDER in checksums:
            codec = load_codec(directory / CODEC_FOLDER, *_part_checksum(directory, checksums, CODEC_FOLDER))
        if codec is not None and codec.dim != method.output_dim:
            raise DiveError(f"{directory}: codec dim {codec.dim} does not match the method's output "
                            f"{method.output_dim}")
        base_model = manifest.get("base_model")
        if base_model is not None:
            base_model = ModelIdentity.from_dict(base_model, str(manifest_path))
        return cls(method, codec, base_model, _evaluation(manifest_path, manifest.get("evaluation")))


def saved_sha256(directory: str | Path) -> str:
    """The checksum that identifies a saved pipeline: its ``pipeline.json``'s (which records every part's,
    which record their payloads'), or a bare method folder's ``config.json``'s."""
    directory = Path(directory)
    manifest = directory / PIPELINE_FILE
    return file_sha256(manifest if os.path.lexists(manifest) else directory / CONFIG_FILE)


def _part_checksums(manifest_path: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """The recorded SHA-256 of each part's ``config.json``: ``method`` always, ``codec`` when there is one.

    A manifest without them is refused (a missing checksum would turn the check off), and so is one
    whose ``folders`` disagree with them.
    """
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or METHOD_FOLDER not in checksums:
        raise DiveError(f"{manifest_path}: no 'checksums' of its parts (each part's {CONFIG_FILE} SHA-256); "
                        "save the pipeline again")
    parts = {METHOD_FOLDER, CODEC_FOLDER}
    if not set(checksums) <= parts or not all(_is_sha256(value) for value in checksums.values()):
        raise DiveError(f"{manifest_path}: 'checksums' must map {METHOD_FOLDER} (and {CODEC_FOLDER}) to SHA-256s, "
                        f"got {short_repr(checksums)}")
    folders = {METHOD_FOLDER: METHOD_FOLDER, CODEC_FOLDER: CODEC_FOLDER if CODEC_FOLDER in checksums else None}
    if manifest.get("folders") != folders:
        raise DiveError(f"{manifest_path}: 'folders' must be {folders} to match its checksums, "
                        f"got {short_repr(manifest.get('folders'))}")
    return checksums


def _evaluation(manifest_path: Path, evaluation: Any) -> dict[str, Any] | None:
    """The recorded ``evaluation``: None, or a mapping whose ``metrics`` map names to finite numbers."""
    if evaluation is None:
        return None
    metrics = evaluation.get("metrics") if isinstance(evaluation, dict) else None
    if not isinstance(metrics, dict) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
            for value in metrics.values()):
        raise DiveError(f"{manifest_path}: 'evaluation' must be null or a mapping whose 'metrics' map names to "
                        f"numbers, got {short_repr(evaluation)}")
    return evaluation


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(char in "0123456789abcdef" for char in value)


def _part_checksum(directory: Path, checksums: dict[str, str], folder: str) -> tuple[str, str]:
    """(the checksum ``folder``'s ``config.json`` must have, the refusal when it has another)."""
    return checksums[folder], (f"{directory / folder}: does not match {PIPELINE_FILE} (altered, or a save was "
                               "interrupted); save the pipeline again")
