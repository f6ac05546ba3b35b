import numpy as np
import pytest

import dive
from dive.data import TrainSet
from dive.errors import DiveError
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec
from helpers import random_unit


def fitted_pipeline(codec=None):
    corpus = random_unit(200, 32)
    method = create_method("pca", dim=16).fit(TrainSet.unsupervised(corpus))
    pipeline = Pipeline(method)
    if codec:
        pipeline.fit_codec(create_codec(codec), corpus)
    return pipeline, corpus


@pytest.mark.parametrize("codec,expected_bytes", [(None, 64), ("float16", 32), ("int8", 16), ("binary", 2)])
def test_bytes_per_vector_is_the_stored_size(codec, expected_bytes):
    pipeline, corpus = fitted_pipeline(codec)
    assert pipeline.bytes_per_vector == expected_bytes
    assert pipeline.encode(corpus[:5]).nbytes == 5 * expected_bytes


def test_save_load_round_trip_through_dive_load(tmp_path):
    pipeline, corpus = fitted_pipeline("int8")
    pipeline.save(tmp_path / "p")
    loaded = dive.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.encode(corpus), pipeline.encode(corpus))
    assert loaded.describe() == pipeline.describe()
    bare = dive.load(tmp_path / "p" / "method")  # a method folder loads as a pipeline without codec
    assert bare.codec is None
    np.testing.assert_array_equal(bare.transform(corpus), pipeline.transform(corpus))


def test_a_codec_of_the_wrong_width_is_refused(tmp_path):
    pipeline, corpus = fitted_pipeline()
    pipeline.codec = create_codec("int8").fit(corpus)  # fitted on 32-d input, not the 16-d output
    pipeline.save(tmp_path / "p")
    with pytest.raises(DiveError, match="codec dim 32 does not match the method's output 16"):
        Pipeline.load(tmp_path / "p")


@pytest.mark.parametrize("codec", [None, "int8", "binary"])
def test_compress_streams_chunks_equal_to_the_in_memory_result(tmp_path, codec):
    from dive.pipeline import compress_file

    pipeline, corpus = fitted_pipeline(codec)
    np.save(tmp_path / "in.npy", corpus)
    summary = compress_file(pipeline, tmp_path / "in.npy", tmp_path / "out.npy", chunk_rows=33, progress=False)
    assert summary["n_vectors"] == 200
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), pipeline.encode(corpus))


def test_compress_failing_midway_leaves_no_output(tmp_path, monkeypatch):
    from dive.pipeline import compress_file

    pipeline, corpus = fitted_pipeline("int8")
    corpus = corpus.copy()
    corpus[150, 3] = np.nan  # the 5th chunk of 33 rows is bad
    np.save(tmp_path / "in.npy", corpus)
    with pytest.raises(DiveError, match="NaN"):
        compress_file(pipeline, tmp_path / "in.npy", tmp_path / "out.npy", chunk_rows=33, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "in.npy"]  # no output, no temp file


def test_compress_rejects_truncated_and_non_npy_inputs(tmp_path):
    from dive.pipeline import compress_file

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
    import os
    import signal
    import subprocess
    import sys
    import time

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
