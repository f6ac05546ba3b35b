"""``dive reproduce``: run a grid of cells, append each to ``results.jsonl``, resume on rerun.

One cell = (dataset, protocol, method, dim, seed). Each dataset is embedded once. A finished
cell is appended to ``DIR/results.jsonl`` as soon as it completes (see
:mod:`dive.experiments.store`), so an interrupted run resumes where it stopped. A rerun with
settings that change a finished cell's numbers (epochs, overrides, mining, split, tuning) is
refused rather than passing the old numbers off as the new ones.
One process at a time may run a grid into a folder: a second one would redo the first one's cells.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Iterator

from dive.config import parse_assignments, read_config_file
from dive.data import MiningConfig, SplitConfig
from dive.encode import EncodeConfig
from dive.errors import DiveError
from dive.evaluate import DEFAULT_KS, check_cutoffs
from dive.experiments.plots import make_figures
from dive.experiments.report import build_report
from dive.experiments.run import CodecChoice, ExperimentSpec, load_data, model_label, recorded_settings, run_cells
from dive.experiments.store import (CELL_FIELDS, LOCK_FILE, RESULTS_FILE, append_result, cell_key,  # noqa: F401
                                    cell_settings, check_one_model, folder_lock, merge_results, read_results,
                                    repair)
from dive.experiments.tune import tune
from dive.methods import REGISTRY, method_class
from dive.quantize import codec_class
from dive.utils import atomic_path

log = logging.getLogger(__name__)


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
    """With > 0, every method with a search space is tuned per dataset on the validation slice with
    this many trials (at the smallest dim, reused for every dim) before its cells run; 0 keeps
    the defaults (DIVE: Table 8)."""
    vectors: dict[str, str] = field(default_factory=dict)
    """Per-dataset folders of precomputed vectors (as ``dive embed`` writes) instead of encoding."""
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_cutoffs(self.ks)
        for method in self.methods:
            parse_method(method)
        for label in self.codecs:
            parse_codec(label)

    @classmethod
    def from_preset(cls, out: Path | str, preset: str | None = None, train: dict[str, Any] | None = None,
                    **settings: Any) -> GridSpec:
        """The grid of ``preset`` (see :data:`PRESETS`; ``None``: the defaults) with ``settings``
        (GridSpec fields; ``None`` values are left unset) overriding it. ``train`` settings (e.g.
        ``device``, ``progress``) reach every method that trains a network."""
        chosen = {**(PRESETS[preset] if preset else {}),
                  **{name: value for name, value in settings.items() if value is not None}}
        return cls(out=Path(out), overrides=train_overrides(train or {}), **chosen)


def train_overrides(train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-method overrides that give every method with training settings the ``train`` ones."""
    return {name: {"train": train} for name, cls in REGISTRY.items()
            if train and "train" in cls.Config.__dataclass_fields__}


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"datasets": ["scifact"], "dims": [128], "seeds": [0], "protocols": ["heldout", "paper"], "epochs": 25},
    "paper": {"datasets": ["scifact", "cranfield"], "dims": [128, 256, 512], "seeds": [0, 1, 2],
              "protocols": ["heldout", "paper"]},
}
"""``quick`` is what ``make demo`` runs: every method, half the paper's 50 epochs so the 20 cells
fit in about 15 minutes on 2 CPU cores (measured: 24.7 min at 50 epochs); the report states the
budget. ``paper`` is the full grid with the paper's 50 epochs."""


def _parse_label(label: str, what: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value+key=value`` -> (name, settings)."""
    name, _, settings_text = label.partition(":")
    return name, parse_assignments(list(filter(None, settings_text.split("+"))), f"{what} {label!r}")


def parse_codec(label: str) -> CodecChoice:
    """``none`` -> None; ``pq:m=16+nbits=8`` -> ("pq", {"m": 16, "nbits": 8})."""
    name, settings = _parse_label(label, "codec")
    if name == "none":
        return None
    codec_class(name)
    return name, settings


def parse_method(label: str) -> tuple[str, dict[str, Any]]:
    """A method, or a *variant*: one with settings changed, e.g. for an ablation.

    ``dive-anchored`` -> ("dive-anchored", {}); ``dive-anchored:init=random+preserve=0`` ->
    ("dive-anchored", {"init": "random", "preserve": 0}). A variant's cells are recorded under
    its label (``method``) with ``variant_of`` naming the method, so it sits beside the method
    in one results file; its settings win over ``--tune``'s (they are what the variant is)."""
    name, settings = _parse_label(label, "method")
    unknown = sorted(set(settings) - set(method_class(name).Config.__dataclass_fields__))
    if unknown:
        raise DiveError(f"method {label!r}: {name} has no setting {', '.join(unknown)}")
    return name, settings


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
    """The grid's overrides for a registered method (not a variant label): ``*``'s, the method's, epochs."""
    fields = method_class(method).Config.__dataclass_fields__
    merged = {key: value for key, value in spec.overrides.get("*", {}).items() if key in fields}
    merged.update(spec.overrides.get(method, {}))
    if spec.epochs is not None and "train" in fields:
        merged["train"] = {**merged.get("train", {}), "epochs": spec.epochs}
    return merged


def _tuned_overrides(spec: GridSpec, base: ExperimentSpec, data) -> dict[str, dict[str, Any]]:
    """Per tunable method, its settings tuned on the validation slice (at the smallest dim, reused for
    every dim), cached as ``tuned-<dataset>-<method>.json`` with the study beside it."""
    if spec.tune_trials <= 0:
        return {}
    tuned = {}
    for method in dict.fromkeys(name for name, _ in map(parse_method, spec.methods) if method_class(name).tunable):
        path = spec.out / f"tuned-{data[0].name}-{method}.json"
        if not path.exists():
            tune_spec = replace(base, method=method, dim=min(spec.dims), overrides=_overrides(spec, method))
            tune(tune_spec, data, spec.tune_trials, out=path)
        tuned[method] = read_config_file(path)
    return tuned


def run_grid(spec: GridSpec) -> list[dict[str, Any]]:
    """Run every missing cell of ``spec``; return all records (old and new) in ``results.jsonl``."""
    with folder_lock(spec.out):
        return _run_missing_cells(spec)


def _run_missing_cells(spec: GridSpec) -> list[dict[str, Any]]:
    path = spec.out / RESULTS_FILE
    records = read_results(path)
    repair(path, records)
    done = {cell_key(record): record for record in records}
    for dataset in spec.datasets:
        base = ExperimentSpec(dataset=dataset, ks=spec.ks, data_dir=spec.data_dir, encode=spec.encode,
                              mining=spec.mining, split=spec.split, vectors=spec.vectors.get(dataset))
        check_one_model(records, dataset, model_label(base), path)
        data = load_data(base)
        tuned = _tuned_overrides(spec, base, data)
        todo = []
        for protocol, method, dim, seed in cells(spec, data[1].dim):
            name, variant = parse_method(method)
            overrides = {**_overrides(spec, name), **tuned.get(name, {}), **variant}
            cell = replace(base, method=name, dim=dim, protocol=protocol, seed=seed, overrides=overrides)
            keys = {label: (data[0].name, protocol, method, dim, seed, label) for label in spec.codecs}
            for key in keys.values():
                if key in done:
                    check_same_settings(done[key], cell, data[0].name, path)
            missing = [label for label, key in keys.items() if key not in done]
            if missing:
                todo.append((method, cell, missing))
        log.info("%s: %d cells to run, %d already done", dataset, len(todo), len(done))
        for number, (method, cell, labels) in enumerate(todo, start=1):
            log.info("[%s %d/%d] %s %s dim %d seed %d codecs %s", dataset, number, len(todo), cell.protocol,
                     method, cell.dim, cell.seed, ",".join(labels))
            for label, result in zip(labels, run_cells(cell, [parse_codec(label) for label in labels], data)):
                record = result.record
                record["codec_label"] = label
                if method != cell.method:
                    record.update(method=method, variant_of=cell.method)
                append_result(path, record)
                records.append(record)
    return records


def check_same_settings(record: dict[str, Any], cell: ExperimentSpec, dataset_name: str, path: Path) -> None:
    """Refuse to count ``record`` as cell ``cell`` done when it was run with other settings (e.g. epochs):
    its numbers are not the ones asked for. Fields an older record lacks are not compared."""
    recorded = cell_settings(record)
    as_json = json.loads(json.dumps(recorded_settings(cell, dataset_name)))  # tuples become lists, as in the file
    expected = {name: value for name, value in cell_settings({**as_json, "protocol": cell.protocol}).items()
                if name in recorded}
    if recorded == expected:
        return
    old, new = _flat(recorded), _flat(expected)
    differences = [f"{name} {old.get(name, 'unset')}, now {new.get(name, 'unset')}"
                   for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name)]
    raise DiveError(f"{path}: its {dataset_name} {cell.protocol} {cell.method} dim {cell.dim} seed {cell.seed} cell "
                    f"was run with other settings ({'; '.join(differences[:3])}); use another --out folder "
                    "or the same settings")


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"config": {"train": {"epochs": 1}}}`` -> ``{"config.train.epochs": 1}``."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def write_report(out: Path, wall_seconds: float | None = None) -> Path:
    """(Re)build ``report.md`` and the figures from ``out/results.jsonl``."""
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
