"""Own vectors and queries from files: .npy + ids, Parquet with id and other columns, JSONL queries."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dive.errors import DiveError
from dive.inputs import read_ids, read_query_texts, read_vectors
from helpers import random_unit


def test_npy_with_ids_or_row_numbers(tmp_path):
    np.save(tmp_path / "v.npy", random_unit(4, 8))
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\n")
    assert read_vectors(tmp_path / "v.npy", tmp_path / "ids.txt").ids == ["a", "b", "c", "d"]
    read = read_vectors(tmp_path / "v.npy")
    assert read.ids == ["0", "1", "2", "3"] and read.vectors.dtype == np.float32 and read.columns is None


def test_parquet_ids_and_other_columns(tmp_path):
    vectors = random_unit(3, 4)
    table = pa.table({"id": ["x", "y", "z"], "lang": ["en", "fr", "de"],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)})
    pq.write_table(table, tmp_path / "v.parquet")
    read = read_vectors(tmp_path / "v.parquet")
    assert read.ids == ["x", "y", "z"] and read.columns.column_names == ["lang"]
    np.testing.assert_array_equal(read.vectors, vectors)
    by_column = read_vectors(tmp_path / "v.parquet", id_column="lang")
    assert by_column.ids == ["en", "fr", "de"] and by_column.columns.column_names == ["id"]


@pytest.mark.parametrize("write,call,message", [
    (lambda p: np.save(p / "v.npy", random_unit(4, 8)), lambda p: read_vectors(p / "v.npy", p / "ids.txt"),
     "2 ids but"),
    (lambda p: np.save(p / "v.npy", np.array([[1.0, np.nan]])), lambda p: read_vectors(p / "v.npy"), "NaN"),
    (lambda p: (p / "v.npy").write_bytes(b"not numpy"), lambda p: read_vectors(p / "v.npy"), "not a readable .npy"),
    (lambda p: np.save(p / "v.npy", np.array([{"a": 1}], dtype=object)), lambda p: read_vectors(p / "v.npy"),
     "not a readable .npy"),
    (lambda p: None, lambda p: read_vectors(p / "v.txt"), "no such file"),
    (lambda p: (p / "q.jsonl").write_text('{"_id": "1", "text": "a"}\n{"_id": "2"}\n'),
     lambda p: read_query_texts(p / "q.jsonl"), "q.jsonl:2"),
    (lambda p: (p / "empty.txt").write_text("a\n\nb\n"), lambda p: read_ids(p / "empty.txt"), "empty.txt:2: empty id"),
])
def test_bad_files_are_one_line(tmp_path, write, call, message):
    (tmp_path / "ids.txt").write_text("a\nb\n")
    write(tmp_path)
    with pytest.raises(DiveError, match=message) as error:
        call(tmp_path)
    assert "\n" not in str(error.value)


def test_query_texts_from_beir_jsonl(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "vitamin D"}\n\n{"_id": 7, "text": "aspirin"}\n')
    assert read_query_texts(tmp_path / "q.jsonl") == (["q1", "7"], ["vitamin D", "aspirin"])
