import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dive.compress import compress_file, compress_with_ray
from dive.errors import DiveError
from helpers import random_unit
from test_pipeline import fitted_pipeline

def assert_same_storage(streamed: np.ndarray, in_memory: np.ndarray) -> None:
    """Codes must match exactly; float32 output within float rounding: BLAS may pick another kernel
    for a 33-row chunk than for 200 rows, which moves the last bit on some CPUs."""
    if np.issubdtype(in_memory.dtype, np.floating):
        np.testing.assert_allclose(streamed, in_memory, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(streamed, in_memory)


@pytest.mark.parametrize("codec", [None, "int8", "binary"])
def test_compress_streams_chunks_equal_to_the_in_memory_result(tmp_path, codec):
    pipeline, corpus = fitted_pipeline(codec)
    np.save(tmp_path / "in.npy", corpus)
    summary = compress_file(pipeline, tmp_path / "in.npy", tmp_path / "out.npy", chunk_rows=33, progress=False)
    assert summary["n_vectors"] == 200
    assert_same_storage(np.load(tmp_path / "out.npy"), pipeline.encode(corpus))


def test_compress_failing_midway_leaves_no_output(tmp_path, monkeypatch):
    pipeline, corpus = fitted_pipeline("int8")
    corpus = corpus.copy()
    corpus[150, 3] = np.nan  # the 5th chunk of 33 rows is bad
    np.save(tmp_path / "in.npy", corpus)
    with pytest.raises(DiveError, match="NaN"):
        compress_file(pipeline, tmp_path / "in.npy", tmp_path / "out.npy", chunk_rows=33, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "in.npy"]  # no output, no temp file


def test_compress_rejects_truncated_and_non_npy_inputs(tmp_path):
    pipeline, corpus = fitted_pipeline()
    np.save(tmp_path / "in.npy", corpus)
    data = (tmp_path / "in.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DiveError, match="truncated"):
        compress_file(pipeline, tmp_path / "cut.npy", tmp_path / "out.npy", progress=False)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(DiveError, match="not a .npy file"):
        compress_file(pipeline, tmp_path / "text.npy", tmp_path / "out.npy", progress=False)
    assert not (tmp_path / "out.npy").exists()


def test_killed_compress_leaves_no_output_file(tmp_path):
    pipeline, _ = fitted_pipeline()
    pipeline.save(tmp_path / "p")
    np.save(tmp_path / "big.npy", random_unit(400_000, 32))
    command = [sys.executable, "-m", "dive.cli", "compress", "--pipeline", str(tmp_path / "p"), "--input",
               str(tmp_path / "big.npy"), "--output", str(tmp_path / "out.npy"), "--chunk-rows", "500"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.npy") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert not (tmp_path / "out.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.npy")]  # temp file removed too
    done = subprocess.run(command, capture_output=True, text=True)  # the rerun completes
    assert done.returncode == 0 and np.load(tmp_path / "out.npy").shape == (400_000, 16)


def write_parquet(path, vectors, ids=None, column="embedding"):
    ids = ids or [f"doc{i}" for i in range(len(vectors))]
    table = pa.table({"id": ids, column: pa.array(list(vectors), type=pa.list_(pa.float32()))})
    pq.write_table(table, path, row_group_size=50)


@pytest.mark.parametrize("codec", [None, "binary"])
def test_parquet_in_parquet_out_keeps_ids_and_equals_in_memory(tmp_path, codec):
    pipeline, corpus = fitted_pipeline(codec)
    write_parquet(tmp_path / "in.parquet", corpus)
    summary = compress_file(pipeline, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=33,
                            progress=False)
    assert summary["n_vectors"] == 200
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == [f"doc{i}" for i in range(200)]
    stored = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert_same_storage(stored, pipeline.encode(corpus))


def test_parquet_to_npy_and_a_named_column(tmp_path):
    pipeline, corpus = fitted_pipeline("int8")
    write_parquet(tmp_path / "in.parquet", corpus, column="dense")
    with pytest.raises(DiveError, match="no vector column found .*columns: id, dense.*--column"):
        compress_file(pipeline, tmp_path / "in.parquet", tmp_path / "out.npy", progress=False)
    compress_file(pipeline, tmp_path / "in.parquet", tmp_path / "out.npy", column="dense", chunk_rows=64,
                  progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), pipeline.encode(corpus))


def test_bad_parquet_inputs_fail_clearly_and_write_nothing(tmp_path):
    pipeline, corpus = fitted_pipeline()
    ragged = [list(row) for row in corpus[:10]]
    ragged[7] = ragged[7][:5]
    pq.write_table(pa.table({"embedding": ragged}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"embedding": [list(corpus[0]), None]}), tmp_path / "null.parquet")
    pq.write_table(pa.table({"embedding": ["a", "b"]}), tmp_path / "text.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    write_parquet(tmp_path / "wide.parquet", random_unit(10, 48))
    cases = {"ragged.parquet": "row 7 of 'embedding' has 5 values, row 0 has 32",
             "null.parquet": "row 1 of 'embedding' is null",
             "text.parquet": "holds string, expected lists of floats",
             "junk.parquet": "not a readable Parquet file",
             "wide.parquet": "dimension 48 does not match the expected 32"}
    for name, message in cases.items():
        with pytest.raises(DiveError, match=message):
            compress_file(pipeline, tmp_path / name, tmp_path / "out.parquet", progress=False)
    with pytest.raises(DiveError, match="unknown file type"):
        compress_file(pipeline, tmp_path / "wide.parquet", tmp_path / "out.csv", progress=False)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith((".out", "out"))]


def test_ray_engine_equals_the_single_process_result_on_real_vectors(tmp_path, local_ray, scifact):
    from dive.cli import main
    from dive.data import TrainSet
    from dive.methods import create_method
    from dive.pipeline import Pipeline
    from dive.quantize import create_codec

    _, embeddings = scifact
    docs = embeddings.doc_vectors[:1000]
    pipeline = Pipeline(create_method("pca", dim=64).fit(TrainSet.unsupervised(docs)))
    pipeline.fit_codec(create_codec("int8"), docs)
    pipeline.save(tmp_path / "pipeline")
    write_parquet(tmp_path / "docs.parquet", docs, ids=embeddings.doc_ids[:1000])
    compress_file(pipeline, tmp_path / "docs.parquet", tmp_path / "local.parquet", progress=False)
    assert main(["compress", "--engine", "ray", "--pipeline", str(tmp_path / "pipeline"), "--input",
                 str(tmp_path / "docs.parquet"), "--output", str(tmp_path / "ray_out"), "--chunk-rows", "128"]) == 0
    # Ray may write batches out of order; each row keeps its id, so compare row by row by id.
    on_ray = pq.read_table(tmp_path / "ray_out").sort_by("id")
    assert on_ray.equals(pq.read_table(tmp_path / "local.parquet").sort_by("id"))
    pq.write_table(pq.read_table(tmp_path / "docs.parquet").select(["embedding"]), tmp_path / "bare.parquet")
    with pytest.raises(DiveError, match="has only the vector column 'embedding'; Ray may reorder rows"):
        compress_with_ray(tmp_path / "pipeline", str(tmp_path / "bare.parquet"), str(tmp_path / "bare_out"))
    with pytest.raises(DiveError, match="already exists"):
        compress_with_ray(tmp_path / "pipeline", str(tmp_path / "docs.parquet"), str(tmp_path / "ray_out"))
    with pytest.raises(DiveError, match="2 Ray workers leave none of the cluster's 2 CPUs"):
        compress_with_ray(tmp_path / "pipeline", str(tmp_path / "docs.parquet"), str(tmp_path / "new"), workers=2)


@pytest.mark.parametrize("shape", [(-5, 16), (10, -16)])
def test_a_npy_header_with_a_negative_size_is_refused_and_writes_nothing(tmp_path, shape):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    (tmp_path / "in.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
                                      + np.ones(160, "<f4").tobytes())
    pipeline, _ = fitted_pipeline()
    with pytest.raises(DiveError, match=r"in.npy: .*negative size"):
        compress_file(pipeline, tmp_path / "in.npy", tmp_path / "out.npy", progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.npy"]
