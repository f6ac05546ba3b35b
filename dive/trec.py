"""TREC run files: the 6-column format trec_eval, pytrec_eval and ranx read.

One line per retrieved document: ``qid Q0 docid rank score tag``, ranks from 1, best first,
separated by single spaces. Ids holding whitespace cannot be written (the format splits on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from dive.errors import DiveError
from dive.utils import atomic_path

DEFAULT_TAG = "dive"
"""The run tag (6th column) when none is given."""
ITERATION = "Q0"
"""The 2nd column: trec_eval's unused "iteration" field, by convention Q0."""


def run_lines(query_ids: Sequence[str], hits: Sequence[Sequence[dict[str, Any]]], tag: str = DEFAULT_TAG) -> list[str]:
    """The run's lines for ``hits[i]`` (``{"doc_id", "score"}``, best first) of query ``query_ids[i]``."""
    _check_token(tag, "run tag")
    lines = []
    for query_id, query_hits in zip(query_ids, hits, strict=True):
        _check_token(query_id, "query id")
        for rank, hit in enumerate(query_hits, 1):
            _check_token(hit["doc_id"], "document id")
            lines.append(f"{query_id} {ITERATION} {hit['doc_id']} {rank} {float(hit['score'])!r} {tag}")
    return lines


def write_run(path: str | Path, query_ids: Sequence[str], hits: Sequence[Sequence[dict[str, Any]]],
              tag: str = DEFAULT_TAG) -> int:
    """Write the run atomically (complete or not at all); returns the number of lines."""
    lines = run_lines(query_ids, hits, tag)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _check_token(value: str, what: str) -> None:
    if not value or any(char.isspace() for char in value):
        raise DiveError(f"{what} {value!r} is empty or holds whitespace: a TREC run cannot hold it")
