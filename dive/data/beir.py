"""Load a BEIR-format folder: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``.

Every malformed input fails with a :class:`~dive.errors.DiveError` naming the file and line;
text is strict UTF-8 (a leading BOM is tolerated, see :mod:`dive.data.text`).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from dive.data.text import json_object, text_lines
from dive.errors import DiveError

Qrels = dict[str, dict[str, int]]
"""query id -> document id -> graded relevance (as in pytrec_eval)."""


@dataclass(frozen=True)
class BeirDataset:
    """A retrieval dataset: documents, queries and relevance judgements per split."""

    name: str
    path: Path
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, Qrels]
    corpus_hash: str = field(repr=False)
    queries_hash: str = field(repr=False)

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.jsonl", folder / f"{stem}.jsonl.gz"):
        if candidate.exists():
            return candidate
    raise DiveError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (expected a BEIR-format folder)")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with _open_text(path) as handle:
        for line in handle:
            digest.update(line.encode("utf-8"))
    return digest.hexdigest()[:16]


def _read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict]:
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        record = json_object(path, line_number, line)
        missing = [key for key in required if key not in record]
        if missing:
            raise DiveError(f"{path}:{line_number}: missing field {missing[0]!r}")
        record["_line"] = line_number
        yield record


def _read_records(path: Path, required: tuple[str, ...], to_text) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for record in _read_jsonl(path, required):
        record_id = str(record["_id"])
        if record_id in seen:
            raise DiveError(f"{path}:{record['_line']}: duplicate id {record_id!r}")
        seen.add(record_id)
        ids.append(record_id)
        texts.append(to_text(record))
    if not ids:
        raise DiveError(f"{path}: no records")
    return ids, texts


def document_text(record: dict) -> str:
    """``title + " " + text``, as BEIR and sentence-transformers' BEIR evaluation encode documents."""
    title = str(record.get("title") or "").strip()
    text = str(record.get("text") or "").strip()
    return f"{title} {text}".strip()


def _score(path: Path, line_number: int, text: str) -> int:
    """A graded relevance: a finite number, truncated to an integer as pytrec_eval wants."""
    try:
        score = float(text)
    except ValueError:
        raise DiveError(f"{path}:{line_number}: score {text!r} is not a number") from None
    if not math.isfinite(score):
        raise DiveError(f"{path}:{line_number}: score {text!r} is not a finite number")
    return int(score)


def read_qrels(path: Path, query_ids: set[str], doc_ids: set[str]) -> Qrels:
    """Read a ``query-id  corpus-id  score`` TSV (header optional) and check every id exists."""
    qrels: Qrels = {}
    for line_number, line in text_lines(path):
        row = next(csv.reader([line], delimiter="\t"), [])
        if not row or not "".join(row).strip():
            continue
        if line_number == 1 and row[0].strip().lower() in {"query-id", "query_id", "qid"}:
            continue
        if len(row) < 3:
            raise DiveError(f"{path}:{line_number}: expected 3 tab-separated columns "
                            f"(query-id, corpus-id, score), got {len(row)}")
        query_id, doc_id, score_text = row[0].strip(), row[1].strip(), row[2].strip()
        score = _score(path, line_number, score_text)
        if query_id not in query_ids:
            raise DiveError(f"{path}:{line_number}: query id {query_id!r} is not in the queries file")
        if doc_id not in doc_ids:
            raise DiveError(f"{path}:{line_number}: document id {doc_id!r} is not in the corpus")
        qrels.setdefault(query_id, {})[doc_id] = score
    if not qrels:
        raise DiveError(f"{path}: no relevance judgements")
    return qrels


def load_beir(folder: str | Path, name: str | None = None) -> BeirDataset:
    """Load and validate the BEIR-format dataset in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DiveError(f"{folder}: dataset folder not found")
    corpus_path = _find(folder, "corpus")
    queries_path = _find(folder, "queries")
    doc_ids, doc_texts = _read_records(corpus_path, ("_id",), document_text)
    query_ids, query_texts = _read_records(queries_path, ("_id", "text"), lambda r: str(r["text"]).strip())
    qrels_folder = folder / "qrels"
    qrels_files = sorted(qrels_folder.glob("*.tsv")) if qrels_folder.is_dir() else []
    if not qrels_files:
        raise DiveError(f"{folder}: no qrels/<split>.tsv files")
    known_queries, known_docs = set(query_ids), set(doc_ids)
    qrels = {path.stem: read_qrels(path, known_queries, known_docs) for path in qrels_files}
    return BeirDataset(
        name=name or folder.name,
        path=folder,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=query_texts,
        qrels=qrels,
        corpus_hash=_file_hash(corpus_path),
        queries_hash=_file_hash(queries_path),
    )


def judged_dataset(name: str, path: str | Path, doc_ids: list[str], query_ids: list[str],
                   qrels_files: dict[str, str | Path]) -> BeirDataset:
    """A dataset without text: the ids of a vectors folder and a qrels TSV per split (``{"test": FILE}``,
    and ``"train"`` when the user has one), each read and checked as :func:`read_qrels` does.

    What ``dive fit --vectors DIR --qrels FILE`` trains and tests on: the vectors are the text's only form.
    """
    known_queries, known_docs = set(query_ids), set(doc_ids)
    qrels = {split: read_qrels(Path(file), known_queries, known_docs) for split, file in qrels_files.items()}
    return BeirDataset(name=name, path=Path(path), doc_ids=list(doc_ids), doc_texts=[""] * len(doc_ids),
                       query_ids=list(query_ids), query_texts=[""] * len(query_ids), qrels=qrels,
                       corpus_hash="", queries_hash="")
