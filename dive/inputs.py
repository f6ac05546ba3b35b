"""Own vectors and queries from files, for ``dive index --input`` and ``dive search``.

* Corpus vectors: ``.npy`` (``[n, dim]`` floats; ids from ``--ids``, one per line, else the row
  numbers) or Parquet (a vector column of equal-length float lists, found as ``dive compress``
  finds it; ids from ``--ids`` or an id column; every other column travels with the vectors).
* Query vectors: ``.npy`` or Parquet the same way (ids from ``--query-ids``, else row numbers).
* Query texts: JSONL, one ``{"_id": ..., "text": ...}`` per line (BEIR's ``queries.jsonl``).

``.npy`` files are read with ``allow_pickle=False``. Every refusal is one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dive.compress import file_format, table_vectors, vector_column
from dive.data.sets import check_vectors
from dive.data.text import json_object
from dive.errors import DiveError
from dive.utils import require

ID_COLUMN_NAMES = ("_id", "id", "doc_id", "docid")
"""Parquet columns taken as the ids when neither ``--ids`` nor ``--id-column`` is given (first match)."""
QUERY_ID_KEYS = ("_id", "id", "qid", "query_id")
QUERY_TEXT_KEYS = ("text", "query")


@dataclass
class VectorFile:
    """Vectors read from a file with their ids and, from Parquet, the other columns (a pyarrow Table)."""

    ids: list[str]
    vectors: np.ndarray
    columns: Any = None


def read_vectors(path: str | Path, ids_path: str | Path | None = None, column: str | None = None,
                 id_column: str | None = None) -> VectorFile:
    """Vectors and ids of a ``.npy`` or Parquet file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DiveError(f"{path}: no such file")
    if file_format(path) == "npy":
        if id_column:
            raise DiveError(f"{path}: --id-column is for Parquet input; give .npy ids with --ids")
        vectors, columns, ids = _read_npy(path), None, None
    else:
        vectors, columns, ids = _read_parquet(path, column, None if ids_path else id_column)
    vectors = check_vectors(vectors, str(path))
    if ids_path is not None:
        ids = read_ids(ids_path)
    if ids is None:
        ids = [str(row) for row in range(len(vectors))]
    if len(ids) != len(vectors):
        raise DiveError(f"{ids_path or path}: {len(ids)} ids but {path} holds {len(vectors)} vectors")
    return VectorFile(ids, vectors, columns)


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DiveError(f"{path}: not a readable .npy file of numbers ({str(error).splitlines()[0][:160]})") from None
    if not isinstance(array, np.ndarray):
        raise DiveError(f"{path}: not a .npy array")
    return array


def _read_parquet(path: Path, column: str | None, id_column: str | None) -> tuple[np.ndarray, Any, list[str] | None]:
    """(vectors, the other columns, ids from the id column or None)."""
    parquet = require("pyarrow.parquet", "parquet")
    try:
        table = parquet.read_table(path)
    except (OSError, ValueError) as error:
        raise DiveError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0][:160]})") from None
    names = table.column_names
    vectors_name = vector_column(names, column, path)
    vectors = table_vectors(table, vectors_name, str(path))
    table = table.drop_columns([vectors_name])
    chosen = id_column or next((name for name in ID_COLUMN_NAMES if name in table.column_names), None)
    if id_column and id_column not in table.column_names:
        raise DiveError(f"{path}: no id column {id_column!r} (columns: {', '.join(names)})")
    if chosen is None:
        return vectors, table if table.num_columns else None, None
    ids = [str(value) for value in table.column(chosen).to_pylist()]
    rest = table.drop_columns([chosen])
    return vectors, rest if rest.num_columns else None, ids


def read_ids(path: str | Path) -> list[str]:
    """One id per line (surrounding whitespace removed); an empty line is refused."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DiveError(f"{path}: cannot read ids ({getattr(error, 'strerror', None) or error})") from None
    ids = [line.strip() for line in lines]
    empty = next((number for number, value in enumerate(ids, 1) if not value), None)
    if empty is not None:
        raise DiveError(f"{path}:{empty}: empty id")
    return ids


def read_query_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a JSONL file of ``{"_id", "text"}`` objects (BEIR's ``queries.jsonl``)."""
    path = Path(path)
    ids, texts = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DiveError(f"{path}: cannot read queries ({getattr(error, 'strerror', None) or error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        query_id, text = _query_line(path, number, line)
        ids.append(query_id)
        texts.append(text)
    if not ids:
        raise DiveError(f"{path}: no queries")
    return ids, texts


def _query_line(path: Path, number: int, line: str) -> tuple[str, str]:
    record = json_object(path, number, line, "an object with \"_id\" and \"text\"")
    query_id = next((record[key] for key in QUERY_ID_KEYS if key in record), None)
    text = next((record[key] for key in QUERY_TEXT_KEYS if key in record), None)
    if query_id is None or not isinstance(text, str) or not text.strip():
        raise DiveError(f"{path}:{number}: expected an object with \"_id\" and a non-empty \"text\"")
    return str(query_id), text


def read_query_vectors(path: str | Path, ids_path: str | Path | None = None) -> VectorFile:
    """Query vectors of a ``.npy`` or Parquet file, ids from ``ids_path`` (else row numbers)."""
    return read_vectors(path, ids_path)
