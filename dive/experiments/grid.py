"""``dive reproduce``: run a grid of cells, append each to ``results.jsonl``, resume on rerun.

One cell = (dataset, protocol, method, dim, seed). Each dataset is embedded once. A finished
cell is appended (flushed and fsynced) to ``DIR/results.jsonl`` as soon as it completes, so an
interrupted run resumes where it stopped; a torn last line left by a killed run is dropped.
One process at a time may run a grid into a folder: a second one would redo the first one's cells.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Iterator

from dive.config import parse_assignments
from dive.data import MiningConfig, SplitConfig
from dive.encode import EncodeConfig
from dive.errors import DiveError
from dive.evaluate import DEFAULT_KS
from dive.experiments.run import CodecChoice, ExperimentSpec, load_data, model_label, run_cells
from dive.methods import REGISTRY, method_class
from dive.utils import atomic_path

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".lock"
CELL_FIELDS = ("dataset", "protocol", "method", "dim", "seed", "codec_label")


@dataclass
class GridSpec:
    """A grid of experiment cells and where its results go."""

    out: Path
    datasets: list[str] = field(default_factory=lambda: ["scifact"])
    methods: list[str] = field(default_factory=lambda: list(REGISTRY))
    dims: list[int] = field(default_factory=lambda: [128])
    seeds: list[int] = field(default_factory=lambda: [0])
    protocols: list[str] = field(default_factory=lambda: ["heldout", "paper"])
    codecs: list[str] = field(default_factory=lambda: ["none"])
    """Storage after each method: ``none`` (float32) or a codec, with settings as
    ``name:key=value+key=value`` (e.g. ``binary:rescore=100``, ``pq:m=16+nbits=8``)."""
    epochs: int | None = None
    """Epochs for every torch adapter (``None`` = each method's default, the paper's 50)."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method setting overrides (``{"*": {...}}`` applies to every method that has the setting)."""
    ks: tuple[int, ...] = DEFAULT_KS
    data_dir: str | None = None
    tune_trials: int = 0
    """With > 0, DIVE's loss settings are tuned per dataset on the validation slice (at the
    smallest dim, reused for every dim) before its cells run; 0 keeps Table 8."""
    vectors: dict[str, str] = field(default_factory=dict)
    """Per-dataset folders of precomputed vectors (as ``dive embed`` writes) instead of encoding."""
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for method in self.methods:
            method_class(method)
        for label in self.codecs:
            parse_codec(label)


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"datasets": ["scifact"], "dims": [128], "seeds": [0], "protocols": ["heldout", "paper"], "epochs": 25},
    "paper": {"datasets": ["scifact", "cranfield"], "dims": [128, 256, 512], "seeds": [0, 1, 2],
              "protocols": ["heldout", "paper"]},
}
"""``quick`` is what ``make demo`` runs: every method, half the paper's 50 epochs so the 20 cells
fit in about 15 minutes on 2 CPU cores (measured: 24.7 min at 50 epochs); the report states the
budget. ``paper`` is the full grid with the paper's 50 epochs."""


def parse_codec(label: str) -> CodecChoice:
    """``none`` -> None; ``pq:m=16+nbits=8`` -> ("pq", {"m": 16, "nbits": 8})."""
    from dive.quantize import codec_class

    name, _, settings_text = label.partition(":")
    if name == "none":
        return None
    codec_class(name)
    return name, parse_assignments(list(filter(None, settings_text.split("+"))), f"codec {label!r}")


def cell_key(record: dict[str, Any]) -> tuple:
    return tuple(record.get(name, "none") for name in CELL_FIELDS)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of ``results.jsonl``; a torn (unparseable) last line is ignored, others are errors."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise DiveError(f"{path}:{number}: corrupt results line (not the last one)") from None
            log.warning("%s: dropping a torn last line left by an interrupted run", path)
    return records


def _repair(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``results.jsonl`` without a torn tail, atomically, so appends start on a clean line."""
    text = _results_text(records)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        _write_results(path, text)


def _results_text(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def _write_results(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and fsync, so a finished cell survives a crash."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def cells(spec: GridSpec, input_dim: int) -> Iterator[tuple[str, str, int, int]]:
    """(protocol, method, dim, seed) of one dataset; frozen once per protocol, dims below the input's.

    Seed-major: every protocol, dim and method runs at the first seed before any runs at the next,
    so a grid stopped part-way still leaves whole tables (one seed) rather than some rows only.
    """
    for seed, protocol in product(spec.seeds, spec.protocols):
        if seed == spec.seeds[0] and "frozen" in spec.methods:
            yield protocol, "frozen", input_dim, seed
        for dim, method in product(spec.dims, spec.methods):
            if method != "frozen" and dim < input_dim:
                yield protocol, method, dim, seed


def _overrides(spec: GridSpec, method: str) -> dict[str, Any]:
    fields = method_class(method).Config.__dataclass_fields__
    merged = {key: value for key, value in spec.overrides.get("*", {}).items() if key in fields}
    merged.update(spec.overrides.get(method, {}))
    if spec.epochs is not None and "train" in fields:
        merged["train"] = {**merged.get("train", {}), "epochs": spec.epochs}
    return merged


def _tuned_overrides(spec: GridSpec, base: ExperimentSpec, data) -> dict[str, Any]:
    """Settings of the tunable method (DIVE) tuned on the validation slice, cached as ``tuned-<dataset>.json``."""
    tunable = [method for method in spec.methods if method_class(method).tunable]
    if spec.tune_trials <= 0 or not tunable:
        return {}
    from dive.config import read_config_file
    from dive.experiments.tune import tune_dive

    path = spec.out / f"tuned-{data[0].name}.json"
    if not path.exists():
        tune_spec = replace(base, method=tunable[0], dim=min(spec.dims), overrides=_overrides(spec, tunable[0]))
        tune_dive(tune_spec, data, spec.tune_trials, out=path)
    return read_config_file(path)


def _check_one_model(records: list[dict[str, Any]], dataset: str, model: str, path: Path) -> None:
    """Cells are keyed without the model, so a folder must hold one model's cells per dataset."""
    name = Path(dataset).name
    others = _other_models(records, name, model)
    if others:
        raise DiveError(f"{path}: its {name} cells were embedded with {others[0]}, not {model}; "
                        "use another --out folder")


def _other_models(records: list[dict[str, Any]], dataset: str, model: str) -> list[str]:
    return sorted({str(r.get("model")) for r in records if r.get("dataset") == dataset} - {model})


@contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (released when the process exits, even if killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): run unlocked
        yield
        return
    with open(out / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DiveError(f"{out}: another dive reproduce ({holder}) is running into this folder; "
                            "wait for it or use another --out folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def run_grid(spec: GridSpec) -> list[dict[str, Any]]:
    """Run every missing cell of ``spec``; return all records (old and new) in ``results.jsonl``."""
    spec.out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(spec.out):
        return _run_missing_cells(spec)


def _run_missing_cells(spec: GridSpec) -> list[dict[str, Any]]:
    path = spec.out / RESULTS_FILE
    records = read_results(path)
    _repair(path, records)
    done = {cell_key(record) for record in records}
    for dataset in spec.datasets:
        base = ExperimentSpec(dataset=dataset, ks=spec.ks, data_dir=spec.data_dir, encode=spec.encode,
                              mining=spec.mining, split=spec.split, vectors=spec.vectors.get(dataset))
        _check_one_model(records, dataset, model_label(base), path)
        data = load_data(base)
        tuned = _tuned_overrides(spec, base, data)
        todo = []
        for cell in cells(spec, data[1].dim):
            missing = [label for label in spec.codecs if (data[0].name, *cell, label) not in done]
            if missing:
                todo.append((*cell, missing))
        log.info("%s: %d cells to run, %d already done", dataset, len(todo), len(done))
        for number, (protocol, method, dim, seed, labels) in enumerate(todo, start=1):
            log.info("[%s %d/%d] %s %s dim %d seed %d codecs %s", dataset, number, len(todo), protocol, method,
                     dim, seed, ",".join(labels))
            overrides = _overrides(spec, method)
            if method_class(method).tunable:
                overrides.update(tuned)
            cell = replace(base, method=method, dim=dim, protocol=protocol, seed=seed, overrides=overrides)
            for label, record in zip(labels, run_cells(cell, [parse_codec(label) for label in labels], data)):
                record.pop("_pipelines")
                record["codec_label"] = label
                append_result(path, record)
                records.append(record)
    return records


def merge_results(out: Path, sources: list[Path]) -> int:
    """Add the cells of other ``results.jsonl`` files (e.g. one grid split by method over several
    processes or machines) to ``out``'s; where a cell is in both, ``out``'s record is kept.

    Returns how many records were added. The file is rewritten atomically, so a bad source (missing,
    corrupt, or another model's cells of a dataset ``out`` holds) leaves ``out`` untouched.
    """
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        path = out / RESULTS_FILE
        records = read_results(path)
        done = {cell_key(record) for record in records}
        added = 0
        for source in sources:
            if not source.is_file():
                raise DiveError(f"{source}: no such results file")
            for record in read_results(source):
                if cell_key(record) in done:
                    continue
                _check_same_model(records, record, source, path)
                records.append(record)
                done.add(cell_key(record))
                added += 1
        _write_results(path, _results_text(records))
    return added


def _check_same_model(records: list[dict[str, Any]], record: dict[str, Any], source: Path, path: Path) -> None:
    model, dataset = str(record.get("model")), record.get("dataset")
    others = _other_models(records, dataset, model)
    if others:
        raise DiveError(f"{source}: its {dataset} cells were embedded with {model}, but {path}'s with "
                        f"{others[0]}; a folder holds one model's cells per dataset")


def write_report(out: Path, wall_seconds: float | None = None) -> Path:
    """(Re)build ``report.md`` and the figures from ``out/results.jsonl``."""
    from dive.experiments.plots import make_figures
    from dive.experiments.report import build_report

    records = read_results(out / RESULTS_FILE)
    figures = make_figures(records, out)
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(build_report(records, figures, wall_seconds), encoding="utf-8")
    return path


def reproduce(spec: GridSpec) -> Path:
    """Run the grid (resuming), then write ``report.md`` and figures; return the report's path."""
    started = time.perf_counter()
    run_grid(spec)
    return write_report(spec.out, time.perf_counter() - started)
