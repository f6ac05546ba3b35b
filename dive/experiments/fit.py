"""``dive fit``: from frozen embeddings and a storage budget to a shipped, proven pipeline (issue 22).

1. **Candidates**: every method x dim x codec whose bytes per vector (the codec's own
   :meth:`~dive.quantize.base.Codec.bytes_per_vector_at`, float32 = 4 x dim without one) fit the
   budget. ``frozen`` is tried at the input dimension only; other methods at the dims below it.
2. **Validation**: under the ``heldout`` protocol each (method, dim) is fitted once per split on the
   train queries, with the method's validation model selection, and every codec of it is fitted on
   the corpus and scored on the split's validation slice (carved from the train queries). K-fold
   datasets (no train split, e.g. cranfield) fit every fold and average the folds' validation scores.
   Every candidate shares one load of the embeddings and one set of mined negatives per split;
   ``FitConfig.workers`` (method, dim) groups run side by side in forked processes.
   Each finished candidate is appended to ``OUT/candidates.jsonl`` (fsynced, keyed by method, dim,
   codec, seed and a hash of every setting that decides its numbers) after its pipeline is saved under
   ``OUT/candidates/<label>``; a rerun skips what is there, so an interrupted fit resumes.
3. **Choice** (:func:`choose`): the best validation nDCG@10; ties go to fewer bytes, then to the simpler
   method (training-free first, then registry order). Never a candidate below the best training-free
   one on validation: that candidate is the floor of the rule.
4. **Proof** (:func:`prove`): only now are test queries looked at (the candidate phase sees splits with
   their test part removed). The chosen pipeline, frozen and the best training-free candidate rank the
   test queries with at least one relevant document (K-fold: each fold's pipeline its own fold, the
   per-query scores pooled, so every query is tested once); nDCG@10 by pytrec_eval, its 95% Student
   t-interval over queries, and paired tests by ranx (:mod:`dive.significance`), whose means are
   cross-checked against pytrec_eval's.
5. **Output**: ``OUT/pipeline`` (as ``dive train`` saves it: one folder, or ``fold-N`` folders),
   ``OUT/fit.json`` and ``OUT/fit.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import faiss
import numpy as np

from dive import checks
from dive.data import BeirDataset, Embeddings, Split, TrainSet, make_splits
from dive.data.beir import Qrels, judged_dataset
from dive.data.splits import positive_only
from dive.encode import load_embeddings, model_path
from dive.errors import DiveError
from dive.evaluate import Run, metric_names, per_query_scores, score_run, search_run
from dive.experiments.run import (ExperimentSpec, build_method, check_folder_path, load_data, model_label,
                                  recorded_settings)
from dive.experiments.store import append_result, read_results, repair
from dive.methods import REGISTRY, method_class
from dive.pipeline import FLOAT32_BYTES, Pipeline
from dive.quantize import CODECS, create_codec
from dive.search import FlatSearch
from dive.significance import CONFIDENCE, DEFAULT_STAT_TEST, STAT_TESTS, paired_test, t_interval
from dive.utils import atomic_path, available_cores, configure_threads, seed_everything, write_json

log = logging.getLogger(__name__)

NO_CODEC = "none"
"""The codec name that means float32 storage of the method's output."""

DEFAULT_METHODS = ("frozen", "truncate", "pca", "matryoshka-adaptor", "dive-anchored")
"""The training-free references (frozen, truncate, PCA), the strongest trained baseline of
results/frontier-scifact-heldout (Matryoshka-Adaptor) and dive's own anchored adapter. Search-Adaptor,
SMEC and the original DIVE scored far below Matryoshka-Adaptor there at 64-128 dims; ``--methods`` adds them.
With :data:`DEFAULT_DIMS` and :data:`DEFAULT_CODECS`, scifact at 64 bytes is 30 candidates and 6 trained fits:
12 minutes on 2 cores (benchmarks/README.md), inside the issue's 20."""

DEFAULT_DIMS = (64, 128, 256)
"""The dims of the issue's guidance; capped below the input dim (the input dim itself is ``frozen``)."""

DEFAULT_CODECS = (NO_CODEC, "float16", "int8", "binary", "pq")
"""Every fixed-size codec at its defaults (lossless is measured only after encoding, so no budget can be
checked before fitting)."""

UNBUDGETABLE = ("lossless",)
"""Codecs whose size is measured only after encoding (``Lossless.bytes_per_vector``)."""

CHOICE_METRIC = "ndcg@10"
"""What the choice maximises on validation, and what the proof tests (the issue's metric)."""

PROTOCOL = "heldout"
"""dive fit never trains on test queries: the held-out protocol is the only one it runs."""

CANDIDATES_FILE = "candidates.jsonl"
CANDIDATES_DIR = "candidates"
PIPELINE_DIR = "pipeline"
RESULT_FILE = "fit.json"
REPORT_FILE = "fit.md"
EXPORT_FORMATS = {"st": "sentence-transformers", "onnx": "onnx"}
ONNX_FILE = "pipeline.onnx"
ST_DIR = "sentence-transformers"


@dataclass(frozen=True)
class FitConfig:
    """What ``dive fit`` searches and how it proves the choice.

    Attributes:
        budget: most bytes stored per corpus vector (the user's storage budget; required, > 0).
        methods: methods to try (default :data:`DEFAULT_METHODS`).
        dims: output dims to try (default :data:`DEFAULT_DIMS`), capped below the input dim.
        codecs: codecs to try, ``none`` = float32 (default :data:`DEFAULT_CODECS`).
        stat_test: ranx paired test of the proof, ``student`` or ``fisher`` (default
            :data:`~dive.significance.DEFAULT_STAT_TEST`).
        confidence: of the interval and the tests (default :data:`~dive.significance.CONFIDENCE`, 95%).
        progress: show the candidates' progress bar (and the adapters' epoch bars).
        workers: (method, dim) groups fitted side by side in forked processes, each with the torch threads
            divided among them; 1 fits them one at a time in this process. Default (None): as many as the
            cores allow, cores // torch threads (2 on 2 cores with ``OMP_NUM_THREADS=1``, 1 when torch
            uses every core). The candidates' numbers do not depend on it (benchmarks/README.md measures
            1 and 2 workers).
    """

    budget: float
    methods: tuple[str, ...] = DEFAULT_METHODS
    dims: tuple[int, ...] = DEFAULT_DIMS
    codecs: tuple[str, ...] = DEFAULT_CODECS
    stat_test: str = DEFAULT_STAT_TEST
    confidence: float = CONFIDENCE
    progress: bool = True
    workers: int | None = None

    def __post_init__(self) -> None:
        checks.above("budget", self.budget, 0)
        if self.workers is not None:
            checks.whole_at_least("workers", self.workers, 1)
        for name in self.methods:
            method_class(name)
        for dim in self.dims:
            checks.whole_at_least("dim", dim, 1)
        for codec in self.codecs:
            check_budgetable(codec)
        checks.one_of("stat_test", self.stat_test, STAT_TESTS)
        for what, values in (("methods", self.methods), ("dims", self.dims), ("codecs", self.codecs)):
            if not values:
                raise checks.InvalidSetting(what, "must name at least one", values)


def check_budgetable(codec: str) -> None:
    """Refuse a codec ``dive fit`` cannot use: unknown, or sized only after encoding (lossless)."""
    if codec == NO_CODEC:
        return
    if codec not in CODECS:
        raise DiveError(f"unknown codec {codec!r}; choose {NO_CODEC} (float32) or one of "
                        f"{', '.join(name for name in CODECS if name not in UNBUDGETABLE)}")
    if codec in UNBUDGETABLE:
        raise DiveError(f"codec {codec}: its bytes per vector are measured after encoding, so no budget can be "
                        "checked before fitting; choose a fixed-size codec")


@dataclass(frozen=True)
class Candidate:
    """One method x dim x codec within the budget."""

    method: str
    dim: int
    codec: str
    bytes_per_vector: float

    @property
    def label(self) -> str:
        return f"{self.method}-{self.dim}-{self.codec}"

    @property
    def training_free(self) -> bool:
        return not method_class(self.method).trains


@dataclass
class FitData:
    """The dataset, its frozen embeddings and its splits with the test part removed (what candidates see).

    The test qrels stay in ``_held_out`` and are handed out by :meth:`test_qrels` only once a choice is made.
    """

    dataset: BeirDataset
    embeddings: Embeddings
    splits: list[Split]
    _held_out: list[Qrels] = field(repr=False)
    _chosen: bool = field(default=False, repr=False)

    def test_qrels(self) -> list[Qrels]:
        """Each split's test qrels; refused until :meth:`seal` records that the choice is made."""
        if not self._chosen:
            raise DiveError("test queries are scored only after the choice (dive fit chooses on validation)")
        return self._held_out

    def seal(self) -> None:
        """The choice is made: the test qrels may now be read."""
        self._chosen = True


def split_for_fit(spec: ExperimentSpec, data: tuple[BeirDataset, Embeddings]) -> FitData:
    """``data``'s held-out splits, their test parts kept aside (see :class:`FitData`)."""
    dataset, embeddings = data
    splits = make_splits(dataset, PROTOCOL, spec.split)
    if not all(split.validation for split in splits):
        raise DiveError("dive fit chooses on a validation slice: set validation_fraction above 0")
    return FitData(dataset, embeddings, [replace(split, test={}) for split in splits], [s.test for s in splits])


def load_judged_vectors(vectors: str | Path, qrels: str | Path, train_qrels: str | Path | None = None,
                        ) -> tuple[BeirDataset, Embeddings]:
    """A vectors folder (``corpus.npy``, ``corpus_ids.txt``, ``queries.npy``, ``query_ids.txt``) with the
    user's judgements: ``qrels`` is the test split (K-fold when there is no ``train_qrels``)."""
    embeddings = load_embeddings(vectors)
    files = {"test": qrels, **({"train": train_qrels} if train_qrels else {})}
    dataset = judged_dataset(Path(vectors).name, vectors, embeddings.doc_ids, embeddings.query_ids, files)
    return dataset, embeddings


# ----- candidates --------------------------------------------------------------------------------------


def planned_bytes(codec: str, dim: int, n_docs: int | None = None) -> float:
    """Bytes per vector of ``codec`` (``none``: float32) on ``n_docs`` ``dim``-d outputs; DiveError if it
    cannot fit them."""
    if codec == NO_CODEC:
        return float(FLOAT32_BYTES * dim)
    return create_codec(codec).bytes_per_vector_at(dim, n_docs)


def method_dims(method: str, dims: tuple[int, ...], input_dim: int) -> list[int]:
    """``frozen`` keeps the input dim; other methods take the dims below it."""
    if method_class(method).name == "frozen":
        return [input_dim]
    return sorted({dim for dim in dims if dim < input_dim})


def enumerate_candidates(config: FitConfig, input_dim: int, n_docs: int | None = None) -> list[Candidate]:
    """Every method x dim x codec within ``config.budget`` that can be fitted on ``n_docs`` corpus vectors,
    in registry order; one-line DiveError if none."""
    fitting, smallest = [], None
    for method in sorted(set(config.methods), key=list(REGISTRY).index):
        for dim in method_dims(method, config.dims, input_dim):
            for codec in config.codecs:
                try:
                    size = planned_bytes(codec, dim, n_docs)
                except DiveError as error:
                    log.info("skipping %s-%d-%s: %s", method, dim, codec, error)
                    continue
                candidate = Candidate(method, dim, codec, size)
                smallest = candidate if smallest is None or size < smallest.bytes_per_vector else smallest
                if size <= config.budget:
                    fitting.append(candidate)
    if not fitting:
        hint = f"; the smallest is {smallest.label} at {smallest.bytes_per_vector:g}" if smallest else ""
        raise DiveError(f"no candidate fits the budget of {config.budget:g} bytes per vector{hint} "
                        "(raise --budget, or add smaller --dims or a smaller --codecs choice)")
    return fitting


def candidate_spec(spec: ExperimentSpec, candidate: Candidate, progress: bool) -> ExperimentSpec:
    """The cell of ``candidate``: held-out, its method and dim, epoch bars following ``progress``."""
    overrides = dict(spec.overrides)
    if "train" in method_class(candidate.method).Config.__dataclass_fields__ and not progress:
        overrides["train"] = {**overrides.get("train", {}), "progress": False}
    return replace(spec, method=candidate.method, dim=candidate.dim, protocol=PROTOCOL, overrides=overrides,
                   codec=None if candidate.codec == NO_CODEC else candidate.codec, codec_settings={})


def candidate_key(spec: ExperimentSpec, candidate: Candidate, dataset_name: str) -> dict[str, Any]:
    """What identifies a finished candidate: method, dim, codec, seed and the hash of every setting
    deciding its numbers (method config, mining, split, embedding model, dataset)."""
    settings = {**recorded_settings(candidate_spec(spec, candidate, True), dataset_name), "dataset": dataset_name,
                "ks": list(spec.ks)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"method": candidate.method, "dim": candidate.dim, "codec": candidate.codec, "seed": spec.seed,
            "settings": digest}


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def finished_candidates(out: Path) -> dict[str, dict[str, Any]]:
    """The records of ``OUT/candidates.jsonl`` whose pipelines are saved, by key (a torn last line is dropped)."""
    path = out / CANDIDATES_FILE
    records = read_results(path)
    repair(path, records)
    return {_key_text(record["key"]): record for record in records
            if all((out / folder / "pipeline.json").exists() for folder in record["saved"])}


class TrainSets:
    """One training set (mined negatives) per split, built on first use and shared by every candidate."""

    def __init__(self, spec: ExperimentSpec, data: FitData):
        self.spec, self.data = spec, data
        self._sets: dict[str, TrainSet] = {}

    def __call__(self, split: Split) -> TrainSet:
        if split.name not in self._sets:
            self._sets[split.name] = TrainSet.from_split(self.data.embeddings, split, self.spec.mining,
                                                         self.data.dataset.name)
        return self._sets[split.name]


def _saved_folders(candidate: Candidate, splits: list[Split]) -> list[str]:
    """Where a candidate's pipelines are saved, relative to OUT: one folder, or one per fold."""
    base = Path(CANDIDATES_DIR) / candidate.label
    return [str(base)] if len(splits) == 1 else [str(base / split.name) for split in splits]


def fit_group(spec: ExperimentSpec, group: list[Candidate], data: FitData, train_sets: TrainSets, out: Path,
              progress: bool) -> Iterator[dict[str, Any]]:
    """Fit the group's (method, dim) once per split, then score each of its codecs on validation; yields
    each candidate's record once its pipelines are saved."""
    first = group[0]
    fitted, train_seconds, selections = [], 0.0, []
    for split in data.splits:
        train_set = train_sets(split)
        method = build_method(candidate_spec(spec, first, progress), data.dataset.name)
        started = time.perf_counter()
        method.fit(train_set)
        train_seconds += time.perf_counter() - started
        fitted.append((split, train_set, method))
        selections.append([asdict(selection) for selection in method.history.selections])
    for candidate in group:
        started = time.perf_counter()
        per_split, pipelines = [], []
        for split, train_set, method in fitted:
            pipeline = Pipeline(method, base_model=data.embeddings.model)
            if candidate.codec != NO_CODEC:
                pipeline.fit_codec(create_codec(candidate.codec), data.embeddings.doc_vectors)
            per_split.append(pipeline.evaluate(train_set.validation, spec.ks))
            pipelines.append(pipeline)
        folders = _saved_folders(candidate, data.splits)
        for pipeline, folder in zip(pipelines, folders):
            pipeline.save(out / folder)
        yield {"key": candidate_key(spec, candidate, data.dataset.name), "label": candidate.label,
               "method": candidate.method, "dim": candidate.dim, "codec": candidate.codec,
               "bytes_per_vector": pipelines[0].bytes_per_vector, "training_free": candidate.training_free,
               "validation": {name: float(np.mean([m[name] for m in per_split])) for name in per_split[0]},
               "validation_per_split": per_split,
               "n_validation_queries": int(sum(len(split.validation) for split in data.splits)),
               "train_seconds": train_seconds, "shared_fit": f"{first.method}-{first.dim}",
               "codec_and_validation_seconds": time.perf_counter() - started,
               "selection": selections, "saved": folders}


def _groups(candidates: list[Candidate]) -> list[list[Candidate]]:
    """Candidates sharing a (method, dim): one fit serves all their codecs."""
    groups: dict[tuple[str, int], list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault((candidate.method, candidate.dim), []).append(candidate)
    return list(groups.values())


def run_candidates(spec: ExperimentSpec, config: FitConfig, candidates: list[Candidate], data: FitData,
                   out: Path) -> list[dict[str, Any]]:
    """Every candidate's record: finished ones read back from ``OUT/candidates.jsonl``, the rest fitted,
    scored on validation, saved and appended one by one (``config.workers`` (method, dim) groups at a time)."""
    from tqdm.auto import tqdm

    finished = finished_candidates(out)
    keys = {candidate: _key_text(candidate_key(spec, candidate, data.dataset.name)) for candidate in candidates}
    records = {candidate: finished[keys[candidate]] for candidate in candidates if keys[candidate] in finished}
    if records:
        log.info("resuming: %d of %d candidates already finished in %s", len(records), len(candidates),
                 out / CANDIDATES_FILE)
    todo = [[candidate for candidate in group if candidate not in records] for group in _groups(candidates)]
    todo = [group for group in todo if group]
    train_sets = TrainSets(spec, data)
    with tqdm(total=len(candidates), initial=len(records), unit="candidate", desc="dive fit",
              disable=not config.progress) as bar:
        for candidate, record in _fitted(spec, config, todo, data, train_sets, out):
            append_result(out / CANDIDATES_FILE, record)
            records[candidate] = record
            log.info("%s: validation nDCG@10 %.4f at %g bytes", candidate.label,
                     record["validation"][CHOICE_METRIC], record["bytes_per_vector"])
            bar.update(1)
    return [records[candidate] for candidate in candidates]


def _fitted(spec: ExperimentSpec, config: FitConfig, groups: list[list[Candidate]], data: FitData,
            train_sets: TrainSets, out: Path) -> Iterator[tuple[Candidate, dict[str, Any]]]:
    """(candidate, record) as each finishes: in this process, or, with ``config.workers`` > 1, in forked worker
    processes that share the embeddings and the mined negatives (built here first) and send back JSON."""
    workers = min(resolved_workers(config), len(groups))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for group in groups:
            yield from zip(group, fit_group(spec, group, data, train_sets, out, config.progress))
        return
    for split in data.splits:
        train_sets(split)  # mined once here; the workers inherit them
    _WORKER_STATE.update(spec=spec, groups=groups, data=data, train_sets=train_sets, out=out,
                         threads=max(1, torch_threads() // workers))
    # The trained groups first: the slowest start earliest, and training-free ones fill the gaps.
    order = sorted(range(len(groups)), key=lambda index: groups[index][0].training_free)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start) as pool:
            for index, text in pool.imap_unordered(_fit_group_in_worker, order):
                yield from zip(groups[index], json.loads(text))
    finally:
        _WORKER_STATE.clear()


_WORKER_STATE: dict[str, Any] = {}
"""What forked workers inherit: the spec, the groups, the data, the training sets, OUT, torch threads each."""


def _worker_start() -> None:
    """A worker ends when its pool ends it, or when the fit that started it is killed: the caller's SIGTERM and
    SIGINT handlers (the CLI turns SIGTERM into an exit that unwinds) are not the worker's, and on Linux the
    kernel kills it with its parent (so a rerun after ``kill -9`` never races a leftover worker)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the caller, which ends the pool
    # GNU OpenMP is not fork-safe: a forked child whose parent has run a multi-threaded faiss search
    # waits forever for the parent's thread team. One faiss thread per worker never asks for a team
    # (the workers are the parallelism).
    faiss.omp_set_num_threads(1)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process receives when its parent dies (<sys/prctl.h>)."""


def _fit_group_in_worker(index: int) -> tuple[int, str]:
    """Worker: fit group ``index`` (saving its pipelines) and return its records as JSON text."""
    import torch

    state = _WORKER_STATE
    torch.set_num_threads(state["threads"])
    records = list(fit_group(state["spec"], state["groups"][index], state["data"], state["train_sets"],
                             state["out"], False))
    return index, json.dumps(records)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def resolved_workers(config: FitConfig) -> int:
    """``config.workers``, or as many workers as the cores allow with torch's threads each."""
    return config.workers or max(1, available_cores() // torch_threads())


# ----- choice --------------------------------------------------------------------------------------------


def _rank(record: dict[str, Any]) -> tuple:
    """Best first: higher validation nDCG@10, then fewer bytes, then the simpler method."""
    simplicity = (not record["training_free"], list(REGISTRY).index(record["method"]) if record["method"] in
                  REGISTRY else len(REGISTRY))
    return (-record["validation"][CHOICE_METRIC], record["bytes_per_vector"], *simplicity, record["dim"])


def choose(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """(the chosen record, the best training-free record or None, why) under the rule of the module docstring."""
    floor = min((r for r in records if r["training_free"]), key=_rank, default=None)
    best = min(records, key=_rank)
    score = best["validation"][CHOICE_METRIC]
    if floor is not None and score < floor["validation"][CHOICE_METRIC]:
        best = floor  # the rule's floor; unreachable while the best is chosen, kept so a future rule cannot break it
    if floor is None:
        why = (f"{best['label']} has the best validation nDCG@10 ({score:.4f}); no training-free candidate fits "
               "the budget, so there is no floor to compare with")
    elif best is floor:
        rivals = "no trained candidate beat it" if any(not r["training_free"] for r in records) else \
            "no trained candidate was tried"
        why = f"{best['label']} is training-free and {rivals} on validation (nDCG@10 {score:.4f})"
    else:
        why = (f"{best['label']} has the best validation nDCG@10 ({score:.4f}), above the best training-free "
               f"candidate {floor['label']} ({floor['validation'][CHOICE_METRIC]:.4f})")
    ties = [r["label"] for r in records if r is not best and r["validation"][CHOICE_METRIC] == score]
    if ties:
        why += f"; tied with {', '.join(ties)}, it stores fewer bytes or is the simpler method"
    return best, floor, why


# ----- proof ---------------------------------------------------------------------------------------------


def _pipelines(out: Path, record: dict[str, Any]) -> list[Pipeline]:
    return [Pipeline.load(out / folder) for folder in record["saved"]]


def _run(pipeline: Pipeline | None, embeddings: Embeddings, qrels: Qrels, depth: int) -> Run:
    """Rankings of the queries of ``qrels`` by ``pipeline`` (None: frozen float32 vectors)."""
    eval_set = embeddings.eval_set(qrels)
    searcher = FlatSearch.from_vectors(eval_set.doc_vectors) if pipeline is None else \
        pipeline.searcher(eval_set.doc_vectors)
    return search_run(searcher, eval_set.query_vectors, eval_set.query_ids, eval_set.doc_ids, depth)


def prove(spec: ExperimentSpec, config: FitConfig, data: FitData, out: Path, chosen: dict[str, Any],
          floor: dict[str, Any] | None) -> dict[str, Any]:
    """Score the chosen pipeline once on the test queries, with its interval and paired tests against
    frozen and the best training-free candidate (see the module docstring)."""
    depth = max(spec.ks)
    tests = [positive_only(qrels) for qrels in data.test_qrels()]
    qrels: Qrels = {query: docs for test in tests for query, docs in test.items()}
    systems = {"chosen": chosen, "frozen": None}
    if floor is not None and floor is not chosen:
        systems["best training-free"] = floor
    runs: dict[str, Run] = {}
    for name, record in systems.items():
        pipelines = _pipelines(out, record) if record is not None else [None] * len(tests)
        runs[name] = {query: ranking for pipeline, test in zip(pipelines, tests) if test
                      for query, ranking in _run(pipeline, data.embeddings, test, depth).items()}
    per_query = {name: per_query_scores(run, qrels, CHOICE_METRIC) for name, run in runs.items()}
    queries = sorted(qrels)
    result: dict[str, Any] = {
        "n_test_queries": len(qrels),
        "pooled_over": [split.name for split in data.splits],
        "metrics": {name: score_run(run, qrels, spec.ks) for name, run in runs.items()},
        "interval": {name: t_interval([scores[q] for q in queries], config.confidence).to_dict()
                     for name, scores in per_query.items()},
        "tests": {},
    }
    for name in (other for other in runs if other != "chosen"):
        difference = [per_query["chosen"][q] - per_query[name][q] for q in queries]
        test = paired_test(qrels, runs["chosen"], runs[name], CHOICE_METRIC, config.stat_test, spec.seed,
                           config.confidence)
        test["difference"] = t_interval(difference, config.confidence).to_dict()
        result["tests"][f"vs {name}"] = test
    result["ranx_cross_check"] = _cross_check(result)
    return result


def _cross_check(result: dict[str, Any]) -> dict[str, Any]:
    """ranx's mean nDCG@10 of the chosen pipeline beside pytrec_eval's (they must agree)."""
    pytrec = result["metrics"]["chosen"][CHOICE_METRIC]
    ranx_means = [test["ranx_mean_a"] for test in result["tests"].values()]
    difference = max((abs(mean - pytrec) for mean in ranx_means), default=0.0)
    if difference > CROSS_CHECK_TOLERANCE:
        log.warning("ranx's nDCG@10 differs from pytrec_eval's by %.2g", difference)
    return {"pytrec_eval": pytrec, "ranx": ranx_means[0] if ranx_means else None, "max_abs_difference": difference}


CROSS_CHECK_TOLERANCE = 1e-6
"""ranx and pytrec_eval compute the same nDCG@10 (linear gains); beyond rounding they must agree."""


# ----- outputs -------------------------------------------------------------------------------------------


def _ship(out: Path, chosen: dict[str, Any]) -> list[str]:
    """Copy the chosen candidate's saved pipeline(s) to ``OUT/pipeline`` (whole, or not at all); their folders
    relative to OUT."""
    target = out / PIPELINE_DIR
    staging = out / f".{PIPELINE_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    source = out / CANDIDATES_DIR / chosen["label"]
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return [str(Path(PIPELINE_DIR) / (out / folder).relative_to(source)) for folder in chosen["saved"]]


def export_choice(out: Path, fmt: str, model_folder: str | Path | None) -> str:
    """The shipped form beside the pipeline: ``st`` (a sentence-transformers folder, needs the frozen
    model's folder) or ``onnx``. K-fold: the first fold's pipeline is exported."""
    from dive.export import export_onnx, export_sentence_transformers

    pipeline_folder = out / PIPELINE_DIR
    folders = sorted(p for p in pipeline_folder.iterdir() if p.is_dir() and (p / "pipeline.json").exists())
    pipeline = Pipeline.load(pipeline_folder if (pipeline_folder / "pipeline.json").exists() else folders[0])
    if fmt == "onnx":
        return str(export_onnx(pipeline, out / ONNX_FILE)["output"])
    if model_folder is None:
        raise DiveError("--export st needs the frozen model's folder (--model) when the vectors are your own")
    shutil.rmtree(out / ST_DIR, ignore_errors=True)  # an earlier fit's export into this OUT
    return str(export_sentence_transformers(pipeline, model_folder, out / ST_DIR))


def _export_model(spec: ExperimentSpec, export: str | None) -> Path | None:
    """The frozen model folder a sentence-transformers export appends to (checked before any work)."""
    if export is None:
        return None
    checks.one_of("export", export, tuple(EXPORT_FORMATS))
    if export != "st":
        return None
    if spec.vectors and not spec.encode.model:
        raise DiveError("--export st needs --model: the sentence-transformers folder that made your vectors")
    return model_path(spec.encode.model)


def fit(spec: ExperimentSpec, config: FitConfig, out: str | Path,
        data: tuple[BeirDataset, Embeddings] | None = None, export: str | None = None) -> dict[str, Any]:
    """Run ``dive fit`` into ``out`` and return the result written to ``OUT/fit.json``; with ``export``
    (``st`` or ``onnx``) the shipped form is written beside the pipeline."""
    out = Path(out)
    check_folder_path(out, "--out")
    model_folder = _export_model(spec, export)
    started = time.perf_counter()
    threads = configure_threads()
    seed_everything(spec.seed)
    data = data or load_data(spec)
    candidates = enumerate_candidates(config, data[1].dim, len(data[1].doc_ids))  # refuses an impossible budget before writing
    fit_data = split_for_fit(spec, data)
    out.mkdir(parents=True, exist_ok=True)
    records = run_candidates(spec, config, candidates, fit_data, out)
    chosen, floor, why = choose(records)
    fit_data.seal()
    proof = prove(spec, config, fit_data, out, chosen, floor)
    result = {
        "dataset": fit_data.dataset.name, "model": model_label(spec),
        "input_dim": data[1].dim, "budget": config.budget, "protocol": PROTOCOL, "seed": spec.seed,
        "splits": [split.name for split in fit_data.splits],
        "choice_metric": f"validation {CHOICE_METRIC}",
        "candidates": [_public(record) for record in records],
        "choice": {"label": chosen["label"], "method": chosen["method"], "dim": chosen["dim"],
                   "codec": chosen["codec"], "bytes_per_vector": chosen["bytes_per_vector"], "why": why,
                   "best_training_free": floor["label"] if floor else None},
        "test": proof,
        "pipeline": _ship(out, chosen),
        "threads": threads,
        "workers": resolved_workers(config),
        "wall_seconds": time.perf_counter() - started,
        "sum_train_seconds": float(sum({r["shared_fit"]: r["train_seconds"] for r in records}.values())),
    }
    if export is not None:
        result["export"] = {"format": EXPORT_FORMATS[export], "path": export_choice(out, export, model_folder)}
    write_json(out / RESULT_FILE, result)
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(fit_report(result), encoding="utf-8")
    return result


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A candidate record as ``--json`` and ``fit.json`` print it."""
    keep = ("label", "method", "dim", "codec", "bytes_per_vector", "training_free", "validation",
            "n_validation_queries", "train_seconds", "shared_fit", "saved")
    return {name: record[name] for name in keep}


# ----- report --------------------------------------------------------------------------------------------


def _fmt_interval(interval: dict[str, Any]) -> str:
    return f"{interval['mean']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"


def fit_report(result: dict[str, Any]) -> str:
    """``fit.md``: the candidates, the choice and why, the test result and what to expect."""
    choice, test = result["choice"], result["test"]
    confidence = next(iter(test["interval"].values()))["confidence"]
    lines = [f"# dive fit: {result['dataset']} at {result['budget']:g} bytes per vector", "",
             f"Embeddings: {result['model']} ({result['input_dim']}-d). Protocol: {result['protocol']} "
             f"(splits: {', '.join(result['splits'])}); every candidate was fitted on the train queries and scored "
             "on the validation slice carved from them. No test query was scored before the choice.", "",
             *([f"K-fold ({len(result['splits'])} folds, no train split): validation scores are means over the "
                "folds' validation slices; the test result pools each fold's pipeline scored on its own fold's "
                "test queries, so every query is tested once, by a pipeline that never saw it. The shipped "
                "pipeline has one folder per fold.", ""] if len(result["splits"]) > 1 else []),
             "## Candidates (validation)", "",
             "| candidate | method | dim | codec | bytes/vector | val nDCG@10 | val Recall@10 | train s |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for record in sorted(result["candidates"], key=_rank):
        mark = " **(chosen)**" if record["label"] == choice["label"] else ""
        free = " (training-free)" if record["training_free"] else ""
        lines.append(f"| {record['label']}{mark} | {record['method']}{free} | {record['dim']} | {record['codec']} | "
                     f"{record['bytes_per_vector']:g} | {record['validation']['ndcg@10']:.4f} | "
                     f"{record['validation'].get('recall@10', float('nan')):.4f} | {record['train_seconds']:.1f} |")
    lines += ["", "Train seconds are per (method, dim): its codecs share one fit.", "",
              "## Choice", "", f"**{choice['label']}** ({choice['bytes_per_vector']:g} bytes per vector): "
              f"{choice['why']}.", "",
              "Rule: the best validation nDCG@10; ties go to fewer bytes, then to the simpler method; never below "
              "the best training-free candidate.", "",
              f"## Test result ({test['n_test_queries']} test queries, scored once, after the choice)", "",
              f"nDCG@10 with its {confidence:.0%} Student t-interval over queries:", "",
              "| system | nDCG@10 [interval] | Recall@10 |", "|---|---|---:|"]
    for name, interval in test["interval"].items():
        lines.append(f"| {name} | {_fmt_interval(interval)} | {test['metrics'][name].get('recall@10', float('nan')):.4f} |")
    lines += ["", "Paired tests of the chosen pipeline (ranx):", "",
              "| against | test | difference [interval] | p | significant | wins/ties/losses |",
              "|---|---|---|---:|---|---|"]
    for name, paired in test["tests"].items():
        lines.append(f"| {name.removeprefix('vs ')} | {paired['test']} | {_fmt_interval(paired['difference'])} | "
                     f"{paired['p']:.3g} | {'yes' if paired['significant'] else 'no'} | "
                     f"{paired['wins']}/{paired['ties']}/{paired['losses']} |")
    check = test["ranx_cross_check"]
    lines += ["", f"Cross-check: nDCG@10 by pytrec_eval {check['pytrec_eval']:.6f}, by ranx "
              f"{check['ranx'] if check['ranx'] is None else format(check['ranx'], '.6f')}.", "",
              "## What to expect at this budget", "", _expectation(result), "",
              f"The pipeline is in `{PIPELINE_DIR}/` (load it with `dive.pipeline.Pipeline.load`, or use it with "
              "`dive compress`, `dive index` and `dive export`).", ""]
    return "\n".join(lines)


def _expectation(result: dict[str, Any]) -> str:
    test, choice = result["test"], result["choice"]
    chosen, frozen = test["interval"]["chosen"], test["interval"]["frozen"]
    paired = test["tests"]["vs frozen"]
    verdict = ("a significant difference" if paired["significant"] else
               "a difference the test cannot tell from noise")
    ratio = chosen["mean"] / frozen["mean"] if frozen["mean"] else float("nan")
    ratio_stored = FLOAT32_BYTES * result["input_dim"] / choice["bytes_per_vector"]
    return (f"At {choice['bytes_per_vector']:g} bytes per vector ({ratio_stored:.0f}x "
            f"smaller than float32 {result['input_dim']}-d), expect nDCG@10 near {chosen['mean']:.3f} "
            f"(plausibly {chosen['low']:.3f} to {chosen['high']:.3f}) against {frozen['mean']:.3f} for the frozen "
            f"float32 vectors: {ratio:.1%} of frozen, {verdict} (p = {paired['p']:.3g}, {paired['test']}). "
            "Queries unlike the test queries may differ.")


__all__ = ["Candidate", "FitConfig", "FitData", "choose", "enumerate_candidates", "fit", "fit_report",
           "load_judged_vectors", "prove", "run_candidates", "split_for_fit"]
