"""``dive index`` / ``dive search``: a compressed corpus in a search engine, queried with text or vectors.

:func:`build_index` compresses frozen document vectors with a saved pipeline and stores them
with an engine (:mod:`dive.engines`): ``lancedb`` (embedded, a folder; the default for a new
index), ``qdrant`` (local mode in the folder, or a server), or ``faiss`` (one file, the default
when ``out`` ends in ``.faiss``). :func:`load_index` reads any of them back as a
:class:`SearchIndex`, whose searcher takes frozen query vectors (the pipeline's method in front
of the engine's own search), so :func:`evaluate_index` scores it with dive's evaluation.

Layouts. A folder index (LanceDB, Qdrant) holds ``index.json`` (the manifest), ``pipeline/`` (a
copy of the pipeline, so the folder moves as one piece) and the engine's data; it is built in a
temp folder beside ``out`` and renamed into place when complete, so nothing half-written is
left. A faiss index is the file ``out`` with ``out.json`` beside it, each written atomically.
Manifests record paths relative to the index (absolute paths of older manifests still load),
the document ids, the pipeline's checksum (:func:`dive.pipeline.saved_sha256`, checked on load:
a pipeline retrained or saved again since is refused) and the engine's fields; faiss files and
Qdrant's local storage are checksummed and verified before they are parsed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dive import __version__
from dive.data import BeirDataset, Embeddings, SplitConfig, make_splits
from dive.data.sets import EvalSet
from dive.encode import EncodeConfig, encode_texts, model_identity
from dive.engines import ENGINES, Corpus, Engine, EngineConfig, create_engine
from dive.errors import DiveError, short_repr
from dive.evaluate import DEFAULT_KS, score_run, search_run
from dive.pipeline import Pipeline, saved_sha256
from dive.saved import read_record
from dive.search import Searcher, TransformedSearch
from dive.utils import TEMP_SUFFIX, remove_stale_temps, temp_prefix, write_json

FORMAT = "dive-index/1"
MANIFEST_FILE = "index.json"
"""The manifest inside a folder index."""
PIPELINE_FOLDER = "pipeline"
"""The copy of the pipeline inside a folder index."""
FILE_ENGINE_SUFFIXES = (".faiss", ".index")
"""An ``out`` ending in one of these is a faiss index file when no engine is named."""
DEFAULT_TOP_K = 10
"""Documents returned per query when no ``k`` (``dive search --top``) is given."""

Hits = list[dict[str, Any]]


def manifest_path(index_path: str | Path) -> Path:
    """``PATH/index.json`` for a folder index, ``PATH.json`` beside an index file."""
    index_path = Path(index_path)
    if index_path.is_dir():
        return index_path / MANIFEST_FILE
    return index_path.with_name(index_path.name + ".json")


def default_engine(out: str | Path) -> str:
    """The engine of a new index at ``out`` when none is named: faiss for ``*.faiss``, else LanceDB."""
    return "faiss" if Path(out).suffix.lower() in FILE_ENGINE_SUFFIXES else EngineConfig.engine


@dataclass
class SearchIndex:
    """A loaded index: a :class:`~dive.search.Searcher` of the stored corpus that takes frozen query
    vectors (the pipeline's method in front of the engine's search), its pipeline, row -> document id,
    the text model, the engine's name and whether its search is exhaustive (ranks as dive's evaluation)."""

    searcher: Searcher
    pipeline: Pipeline
    doc_ids: list[str]
    model: str | None
    engine: str = "faiss"
    exact: bool = True

    @property
    def input_dim(self) -> int | None:
        """Dimension of the frozen vectors the pipeline takes."""
        return self.pipeline.method.input_dim

    def search_vectors(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top ``k`` documents for frozen query vectors."""
        self.check_queries(query_vectors)
        return self.searcher.search(query_vectors, min(k, len(self.doc_ids)))

    def check_queries(self, query_vectors: np.ndarray) -> None:
        """Refuse query vectors of another dimension than the pipeline's input, in one line."""
        shape = getattr(query_vectors, "shape", ())
        if len(shape) != 2 or not shape[0]:
            raise DiveError(f"query vectors: expected a non-empty 2-D array [n, dim], got shape {tuple(shape)}")
        if self.input_dim is not None and shape[1] != self.input_dim:
            raise DiveError(f"query vectors have dimension {shape[1]}, but the index's pipeline takes "
                            f"{self.input_dim}-d vectors (the model its corpus was embedded with)")

    def search_hits(self, query_vectors: np.ndarray, k: int = DEFAULT_TOP_K) -> list[Hits]:
        """Top-``k`` ``{"doc_id", "score"}`` per frozen query vector, best first."""
        scores, rows = self.search_vectors(query_vectors, k)
        return [[{"doc_id": self.doc_ids[row], "score": float(score)} for score, row in zip(query_scores, query_rows)
                 if row >= 0] for query_scores, query_rows in zip(scores, rows)]

    def search(self, texts: list[str], k: int = DEFAULT_TOP_K) -> list[Hits]:
        """Top-``k`` ``{"doc_id", "score"}`` per query text (encoded with the index's model)."""
        if not texts:
            raise DiveError("no query text given")
        config = self.query_encoding()
        return self.search_hits(encode_texts(texts, config, desc="encode queries", prompt=config.query_prompt), k)

    def query_encoding(self) -> EncodeConfig:
        """How query texts are encoded: the index's model with the prompts the pipeline's base model
        recorded, refused in one line when that model is not the pipeline's base model."""
        base = self.pipeline.base_model
        config = EncodeConfig(model=self.model, query_prompt=base.query_prompt if base else None,
                              doc_prompt=base.doc_prompt if base else None)
        self.pipeline.check_base_model(model_identity(config), "the index's query model")
        return config

    def close(self) -> None:
        """Release the engine's client (Qdrant's local mode locks its folder while open)."""
        close = getattr(getattr(self.searcher, "searcher", None), "close", None)
        if close is not None:
            close()


# ----- building -------------------------------------------------------------------------------

def build_index(pipeline: Pipeline, pipeline_dir: str | Path, doc_ids: list[str], doc_vectors: np.ndarray,
                out: str | Path, model: str | None = None, config: EngineConfig | None = None,
                columns: Any = None) -> dict[str, Any]:
    """Compress ``doc_vectors`` with the pipeline and store them at ``out`` with ``config``'s engine
    (default: :func:`default_engine`); ``columns`` (a pyarrow Table, one row per document) travel
    with the vectors in a database. Returns the summary printed by ``dive index``."""
    out = Path(out)
    config = config or EngineConfig(engine=default_engine(out))
    engine = create_engine(config)
    doc_ids = [str(doc_id) for doc_id in doc_ids]
    if len(doc_ids) != len(doc_vectors):
        raise DiveError(f"{len(doc_ids)} document ids but {len(doc_vectors)} vectors")
    if len(set(doc_ids)) != len(doc_ids):
        raise DiveError(f"document ids must be unique; {_first_duplicate(doc_ids)!r} appears twice")
    if columns is not None and columns.num_rows != len(doc_ids):
        raise DiveError(f"{columns.num_rows} rows of other columns but {len(doc_ids)} vectors")
    corpus = Corpus(doc_ids, pipeline.transform(doc_vectors), columns)
    if engine.layout == "file":
        return _build_file(engine, pipeline, Path(pipeline_dir), corpus, out, model)
    return _build_folder(engine, pipeline, Path(pipeline_dir), corpus, out, model)


def _first_duplicate(values: Sequence[str]) -> str:
    seen: set[str] = set()
    return next(value for value in values if value in seen or seen.add(value))


def _summary(engine: Engine, pipeline: Pipeline, out: Path, n_vectors: int, fields: dict[str, Any]) -> dict[str, Any]:
    summary = {"index": str(out), "engine": engine.name, "exact": engine.exact(pipeline), "n_vectors": n_vectors,
               **pipeline.describe()}
    if "faiss_index" in fields:
        summary.update({"faiss_index": fields["faiss_index"], "index_bytes": out.stat().st_size})
    else:
        summary["index_bytes"] = _folder_bytes(out)
    return summary


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _manifest(engine: Engine, pipeline: Pipeline, summary: dict[str, Any], pipeline_field: str, pipeline_sha256: str,
              model: str | None, doc_ids: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    recorded = {name: value for name, value in summary.items() if name != "index"}  # where it was built: not kept
    return {"format": FORMAT, "dive_version": __version__, **recorded, **fields, "pipeline": pipeline_field,
            "pipeline_sha256": pipeline_sha256, "model": model, "doc_ids": doc_ids}


def _build_file(engine: Engine, pipeline: Pipeline, pipeline_dir: Path, corpus: Corpus, out: Path,
                model: str | None) -> dict[str, Any]:
    """The faiss layout: the file ``out`` (atomic), then ``out.json`` beside it."""
    fields = engine.write(pipeline, corpus, out)
    summary = _summary(engine, pipeline, out, len(corpus.doc_ids), fields)
    base = out.parent
    write_json(manifest_path(out), _manifest(engine, pipeline, summary, _relative(pipeline_dir, base),
                                             saved_sha256(pipeline_dir), _model_field(model, base),
                                             corpus.doc_ids, fields))
    return summary


def _build_folder(engine: Engine, pipeline: Pipeline, pipeline_dir: Path, corpus: Corpus, out: Path,
                  model: str | None) -> dict[str, Any]:
    """The folder layout, built in a temp folder beside ``out`` and renamed onto it when complete."""
    _check_folder_target(out)
    tmp = _temp_folder(out)
    try:
        pipeline.save(tmp / PIPELINE_FOLDER)
        fields = engine.write(pipeline, corpus, tmp)
        summary = _summary(engine, pipeline, tmp, len(corpus.doc_ids), fields)
        summary["index"] = str(out)
        manifest = _manifest(engine, pipeline, summary, PIPELINE_FOLDER, saved_sha256(tmp / PIPELINE_FOLDER),
                             _model_field(model, out), corpus.doc_ids, fields)
        manifest["source_pipeline"] = _relative(pipeline_dir, out)
        write_json(tmp / MANIFEST_FILE, manifest)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _check_folder_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DiveError(f"cannot write {out}: a file is in the way (a {out.suffix or 'file'} index is a folder for "
                        "this engine)")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise DiveError(f"cannot write {out}: a folder that is not a `dive index` index; choose a new --out")


def _temp_folder(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        return Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=TEMP_SUFFIX, dir=out.parent))
    except OSError as error:
        raise DiveError(f"cannot write {out}: {error.strerror or error}") from None


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the complete ``tmp`` onto ``out``; a previous index there is replaced, never mixed."""
    previous = None
    if out.exists():
        previous = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=TEMP_SUFFIX, dir=out.parent))
        os.replace(out, previous / out.name)
    os.replace(tmp, out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the folder ``base`` (both resolved), so the index moves with what it names."""
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def _model_field(model: str | None, base: Path) -> str | None:
    """The text model's folder relative to the manifest's folder ``base``, or as given when it is not a
    folder here (a model name)."""
    if not model or not Path(model).is_dir():
        return model or None
    return _relative(Path(model), base)


# ----- loading --------------------------------------------------------------------------------

COMMON_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "pipeline": (str, "the folder of the pipeline it was built with"),
    "pipeline_sha256": (str, "the pipeline's checksum (indexes of older dives lack it: run `dive index` again)"),
    "doc_ids": (list, "the list of document ids"),
    "model": ((str, type(None)), "the text model's folder, or null"),
}
ENGINE_FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "faiss": {"sha256": (str, "the index file's checksum"), "binary": (bool, "true or false")},
    "lancedb": {"path": (str, "the LanceDB folder in the index"), "table": (str, "the LanceDB table")},
    "qdrant": {"collection": (str, "the Qdrant collection"), "quantization": ((str, type(None)), "a codec or null"),
               "exact": (bool, "true or false"), "rescore": (bool, "true or false"),
               "oversampling": ((int, float), "a number")},
}
"""What :func:`load_index` reads from an index manifest, per engine: each field's type, and what it is."""


def load_index(path: str | Path) -> SearchIndex:
    """Read an index written by :func:`build_index`: its manifest's fields checked, the pipeline
    verified against the checksum it had then, and the engine's data against its own checks."""
    path = Path(path)
    record_path = manifest_path(path)
    if not record_path.exists():
        raise DiveError(f"{path}: no {record_path.name} {'in' if path.is_dir() else 'beside'} it "
                        "(not written by `dive index`)")
    record = read_record(record_path, FORMAT)
    engine_name = record.get("engine", "faiss")  # indexes of older dives are faiss files
    if engine_name not in ENGINES:
        raise DiveError(f"{record_path}: 'engine' must be one of {', '.join(ENGINES)}, got {short_repr(engine_name)}")
    fields = _manifest_fields(record_path, record, {**COMMON_FIELDS, **ENGINE_FIELDS[engine_name]})
    engine = ENGINES[engine_name](EngineConfig(engine=engine_name))
    if engine.layout == "file" and not path.is_file():
        raise DiveError(f"{path}: missing (its {record_path.name} is here)")
    base = record_path.parent
    pipeline_dir = base / fields["pipeline"]
    pipeline = Pipeline.load(pipeline_dir, fields["pipeline_sha256"],
                             f"{path}: its pipeline {pipeline_dir} has changed since `dive index` built it "
                             "(retrained or saved again); run `dive index` again")
    doc_ids = [str(doc_id) for doc_id in fields["doc_ids"]]
    searcher = engine.open(path, record, pipeline, len(doc_ids))
    exact = record.get("exact", True) is True
    model = fields["model"]
    if model and (base / model).is_dir():
        model = str(base / model)
    return SearchIndex(TransformedSearch(pipeline.transform, searcher), pipeline, doc_ids, model, engine_name, exact)


def _manifest_fields(record_path: Path, record: dict[str, Any],
                     expected: dict[str, tuple[type | tuple[type, ...], str]]) -> dict[str, Any]:
    """The fields :func:`load_index` uses, each checked for its type; one refusal naming the first that is wrong."""
    for name, (kind, meaning) in expected.items():
        if name not in record:
            raise DiveError(f"{record_path}: no '{name}' ({meaning}); run `dive index` again")
        if not _has_type(record[name], kind):
            raise DiveError(f"{record_path}: '{name}' must be {meaning}, got {short_repr(record[name])}")
    return {name: record[name] for name in expected}


def _has_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that true/false is only a bool (JSON booleans are ints in Python)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kind) and (not isinstance(value, bool) or bool in kinds)


# ----- evaluating -----------------------------------------------------------------------------

def evaluate_index_on_dataset(index: SearchIndex, data: tuple[BeirDataset, Embeddings], protocol: str,
                              split: SplitConfig, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """:func:`evaluate_index` on the test queries of each of ``protocol``'s splits of a dataset (as
    ``dive evaluate`` scores a pipeline), metrics averaged over the splits."""
    dataset, embeddings = data
    folds = [(len(part.test), evaluate_index(index, embeddings.eval_set(part.test), ks))
             for part in make_splits(dataset, protocol, split)]
    record: dict[str, Any] = {"dataset": dataset.name, "protocol": protocol, "engine": index.engine,
                              "exact": index.exact, "n_test_queries": sum(size for size, _ in folds)}
    for key in ("metrics", "dive_metrics", "difference"):
        record[key] = {name: float(np.mean([fold[key][name] for _, fold in folds])) for name in folds[0][1][key]}
    return record


def evaluate_index(index: SearchIndex, eval_set: EvalSet, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """nDCG@k / Recall@k of ``eval_set``'s queries ranked by the index's engine, beside dive's own
    exact evaluation of the same pipeline (``dive_metrics``) and their difference.

    The index must hold ``eval_set``'s corpus (the same document ids, in any order)."""
    if set(index.doc_ids) != set(eval_set.doc_ids):
        raise DiveError(f"the index holds {len(index.doc_ids)} documents, the dataset's corpus {len(eval_set.doc_ids)}"
                        " with other ids: evaluate an index of this dataset's corpus")
    index.check_queries(eval_set.query_vectors)
    run = search_run(index.searcher, eval_set.query_vectors, eval_set.query_ids, index.doc_ids, max(ks))
    metrics = score_run(run, eval_set.qrels, ks)
    reference = index.pipeline.evaluate(eval_set, tuple(ks))
    return {"engine": index.engine, "exact": index.exact, "metrics": metrics, "dive_metrics": reference,
            "difference": {name: metrics[name] - reference[name] for name in metrics}}
