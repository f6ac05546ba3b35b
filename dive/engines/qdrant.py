"""Qdrant: local mode in the index folder (``QdrantClient(path=...)``: tests, laptops), or a server
or cluster at ``url`` (where a team outgrows one machine).

One collection per index, distance ``Dot``; point id = corpus row, payload = ``doc_id`` and the
input's other columns. The stored vectors are the pipeline's float output or its codec's
reconstruction (:func:`dive.engines.base.stored_vectors`), and the codec maps to Qdrant's own
quantisation on top of them:

* ``int8`` -> scalar quantisation (``INT8``, Qdrant's own quantile ranges, kept in RAM);
* ``binary`` -> binary quantisation (the stored vectors are centred on the codec's medians, so
  Qdrant's sign bits are dive's ``x > median`` bits), candidates oversampled and rescored;
* ``pq`` -> product quantisation at the compression ratio nearest the codec's.

Which search: ``exact`` (``SearchParams(exact=True)``) scans the stored floats and ranks as
dive's evaluation (for int8: float query x dive's int8 reconstruction, exactly what dive
evaluates). Otherwise Qdrant's HNSW + quantised search with ``rescore`` (re-rank candidates by
the stored floats: the setting that matches dive's evaluation, up to the candidates found) and
``oversampling``; ``rescore=False`` ranks by Qdrant's own codes, which are not dive's.
Qdrant's local mode always searches exhaustively (it ignores HNSW and quantisation), so there
both give dive's ranking.

Local mode stores points pickled in SQLite (qdrant-client's own format), so dive records the
SHA-256 of every file of the local storage and verifies them before qdrant-client opens it: an
altered local index is refused before anything in it is unpickled.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dive.engines.base import DOC_ID_FIELD, Corpus, Engine, EngineConfig, pad_results, score_offset, stored_vectors
from dive.errors import DiveError
from dive.pipeline import Pipeline
from dive.saved import file_sha256, read_verified
from dive.search import Searcher
from dive.utils import require

FOLDER = "qdrant"
"""The local-mode storage folder inside the index folder."""
LOCK_FILE = ".lock"
"""qdrant-client's local-mode lock file: rewritten on every open, so not checksummed."""
UPLOAD_BATCH = 1024
"""Points sent per upload request."""
PQ_RATIOS = (4, 8, 16, 32, 64)
"""Compression ratios Qdrant's product quantisation offers (``CompressionRatio.x4`` ... ``x64``)."""
FLOAT32_BYTES = 4
QUANTISED_CODECS = ("int8", "binary", "pq")


def _models() -> Any:
    return require("qdrant_client.models", "db")


class QdrantEngine(Engine):
    """A Qdrant collection, local (in the index folder) or on a server."""

    name = "qdrant"
    summary = "Qdrant collection: local mode in the index folder, or --url a server; scalar int8, binary " \
              "and product quantisation for the codecs"

    def check_config(self, config: EngineConfig) -> None:
        if config.factory is not None or config.search_params is not None:
            raise DiveError(f"--factory and --search-params are for --engine faiss, not {self.name}")

    def approximate_codec(self, pipeline: Pipeline) -> bool:
        """Quantised codecs are approximate on a server (local mode scans every point exactly); binary always
        is: even a full scan ranks by the float reconstruction, which is dive's binary rescored over every
        document, not dive's Hamming ranking or its rescoring of the top ``rescore`` Hamming candidates."""
        name = pipeline.codec.name if pipeline.codec is not None else None
        return name == "binary" or (self.config.url is not None and name in QUANTISED_CODECS)

    def write(self, pipeline: Pipeline, corpus: Corpus, target: Path) -> dict[str, Any]:
        vectors = stored_vectors(pipeline, corpus.output)
        client = self._client(target / FOLDER)
        try:
            self._create(client, pipeline, vectors.shape[1])
            self._upload(client, corpus, vectors)
        finally:
            client.close()
        fields = {"url": self.config.url, "collection": self.config.collection,
                  "quantization": quantization_name(pipeline), "exact": self.exact(pipeline),
                  "rescore": self.config.rescore, "oversampling": self.config.oversampling}
        if self.config.url is None:
            _sync_files(target / FOLDER)
            fields.update({"path": FOLDER, "files": storage_checksums(target / FOLDER)})
        return fields

    def _upload(self, client: Any, corpus: Corpus, vectors: np.ndarray) -> None:
        """Upload every point into the collection just created; on a server, a failed upload removes it."""
        try:
            if self.config.url is None:
                _unsynced_local_writes(client, self.config.collection)
            client.upload_collection(self.config.collection, vectors=vectors, ids=list(range(len(vectors))),
                                     payload=_payloads(corpus), batch_size=UPLOAD_BATCH)
        except BaseException:
            if self.config.url is not None:  # the server keeps nothing half-uploaded (local: the temp folder goes)
                client.delete_collection(self.config.collection)
            raise

    def _client(self, folder: Path) -> Any:
        client_class = require("qdrant_client", "db").QdrantClient
        if self.config.url is not None:
            return client_class(url=self.config.url)
        return client_class(path=str(folder))

    def _create(self, client: Any, pipeline: Pipeline, dim: int) -> None:
        models = _models()
        if self.config.url is not None and client.collection_exists(self.config.collection):
            raise DiveError(f"qdrant: collection {self.config.collection!r} already exists at {self.config.url}; "
                            "pass --collection NAME or delete it first")
        client.create_collection(self.config.collection,
                                 vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT),
                                 quantization_config=quantization_config(pipeline))

    def open(self, target: Path, fields: dict[str, Any], pipeline: Pipeline, n_docs: int) -> Searcher:
        client_class = require("qdrant_client", "db").QdrantClient
        if fields.get("url"):
            client = client_class(url=fields["url"])
        else:
            if not isinstance(fields.get("path"), str):
                raise DiveError(f"{target}: its manifest names no local Qdrant folder ('path') nor 'url'; "
                                "run `dive index` again")
            folder = target / fields["path"]
            verify_storage(folder, fields.get("files"))
            client = _local_client(client_class, folder)
        count = client.count(fields["collection"], exact=True).count
        if count != n_docs:
            client.close()
            raise DiveError(f"{target}: collection {fields['collection']!r} holds {count} points, its manifest "
                            f"{n_docs} document ids (not the collection `dive index` wrote)")
        return QdrantSearch(client, fields, score_offset(pipeline))


def _unsynced_local_writes(client: Any, collection: str) -> None:
    """Turn off SQLite's sync-per-point of qdrant-client's local storage for this build (600 points:
    12 s -> 0.2 s on this machine). Safe here: the build is in a temp folder renamed into place only
    when complete, and :func:`_sync_files` flushes the files once at the end. Without the internals
    this reaches (another qdrant-client), the build is just slower."""
    try:
        connection = client._client.collections[collection].storage.storage
        connection.execute("PRAGMA synchronous=OFF")
    except (AttributeError, KeyError, TypeError):
        return


def _sync_files(folder: Path) -> None:
    """fsync every file of the local storage once (after the unsynced writes)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())


def _local_client(client_class: Any, folder: Path) -> Any:
    """qdrant-client's local mode on ``folder``; a folder another process (or client) holds is one line."""
    try:
        return client_class(path=str(folder))
    except RuntimeError as error:
        if "already accessed" not in str(error):
            raise
        raise DiveError(f"{folder}: in use by another Qdrant client (local mode allows one at a time); wait for "
                        "it, or serve the index with a Qdrant server (--url)") from None


def quantization_name(pipeline: Pipeline) -> str | None:
    codec = pipeline.codec
    return codec.name if codec is not None and codec.name in QUANTISED_CODECS else None


def quantization_config(pipeline: Pipeline) -> Any:
    """Qdrant's own storage for the pipeline's codec (None: floats only)."""
    models = _models()
    name = quantization_name(pipeline)
    if name == "int8":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8,
                                                                                always_ram=True))
    if name == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    if name == "pq":
        ratio = FLOAT32_BYTES * pipeline.method.output_dim / pipeline.codec.bytes_per_vector
        nearest = min(PQ_RATIOS, key=lambda option: abs(math.log(option / ratio)))
        return models.ProductQuantization(product=models.ProductQuantizationConfig(
            compression=models.CompressionRatio(f"x{nearest}"), always_ram=True))
    return None


def _payloads(corpus: Corpus) -> Iterator[dict[str, Any]]:
    """Each point's payload: its document id and the input's other columns."""
    others = corpus.columns.to_pylist() if corpus.columns is not None else None
    for row, doc_id in enumerate(corpus.doc_ids):
        payload = {DOC_ID_FIELD: doc_id}
        if others is not None:
            if DOC_ID_FIELD in others[row]:
                raise DiveError(f"input column {DOC_ID_FIELD!r} clashes with dive's own payload key; rename it")
            payload.update(others[row])
        yield payload


def storage_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a local-mode storage folder (but the lock file), by relative path."""
    return {path.relative_to(folder).as_posix(): file_sha256(path)
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != LOCK_FILE}


def verify_storage(folder: Path, recorded: Any) -> None:
    """Refuse a local storage whose files differ from the ones `dive index` wrote, before qdrant-client reads them."""
    if not isinstance(recorded, dict) or not recorded:
        raise DiveError(f"{folder}: its manifest records no checksums of the Qdrant storage; run `dive index` again")
    found = {path.relative_to(folder).as_posix() for path in folder.rglob("*")
             if path.is_file() and path.name != LOCK_FILE} if folder.is_dir() else set()
    if found != set(recorded):
        raise DiveError(f"{folder}: its files differ from the ones `dive index` wrote (missing or added files)")
    for name, checksum in recorded.items():
        read_verified(folder / name, checksum, f"{folder / name}: checksum does not match its manifest "
                                               "(file altered or truncated)")


class QdrantSearch:
    """A Qdrant collection as a :class:`~dive.search.Searcher` over the pipeline's float output."""

    def __init__(self, client: Any, fields: dict[str, Any], offset: np.ndarray | None = None) -> None:
        self.client = client
        self.fields = fields
        self.offset = offset

    def params(self) -> Any:
        models = _models()
        if self.fields["exact"]:
            return models.SearchParams(exact=True)
        if self.fields["quantization"] is None:
            return None
        return models.SearchParams(quantization=models.QuantizationSearchParams(
            rescore=self.fields["rescore"], oversampling=self.fields["oversampling"]))

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        models = _models()
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        params = self.params()
        requests = [models.QueryRequest(query=query.tolist(), limit=k, params=params, with_payload=False)
                    for query in queries]
        with warnings.catch_warnings():  # local mode: "search_params has no effect" (it is always exhaustive)
            warnings.simplefilter("ignore", UserWarning)
            responses = self.client.query_batch_points(self.fields["collection"], requests)
        shifts = queries @ self.offset if self.offset is not None else np.zeros(len(queries))
        hits = [[(point.score + float(shift), int(point.id)) for point in response.points]
                for response, shift in zip(responses, shifts)]
        return pad_results(hits, k)

    def close(self) -> None:
        self.client.close()
