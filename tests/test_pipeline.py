import numpy as np
import pytest

import dive
from dive.data import EvalSet, TrainSet
from dive.errors import DiveError
from dive.evaluate import evaluate_searcher, evaluate_vectors
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec, evaluate_codec
from dive.search import Searcher
from helpers import random_unit


def fitted_pipeline(codec=None, seed=0):
    corpus = random_unit(200, 32, seed)
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


def test_a_part_that_no_longer_matches_the_manifest_is_refused(tmp_path):
    pipeline, _ = fitted_pipeline("int8")
    folder = pipeline.save(tmp_path / "p")
    other, _ = fitted_pipeline(seed=1)
    other.method.save(folder / "method")  # a valid method folder, but not the one pipeline.json recorded
    with pytest.raises(DiveError, match="method: does not match pipeline.json"):
        dive.load(folder)


def test_an_interrupted_save_leaves_no_pipeline_behind(tmp_path, monkeypatch):
    pipeline, _ = fitted_pipeline("int8")

    def crash(directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.codec, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        pipeline.save(tmp_path / "new")
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())

    previous, _ = fitted_pipeline("binary", seed=1)
    previous.save(tmp_path / "old")
    with pytest.raises(KeyboardInterrupt):
        pipeline.save(tmp_path / "old")  # new method written, codec not, manifest still the old one
    with pytest.raises(DiveError, match="does not match pipeline.json"):
        dive.load(tmp_path / "old")


def test_a_method_folder_without_its_manifest_is_called_incomplete(tmp_path):
    pipeline, _ = fitted_pipeline("int8")
    folder = pipeline.save(tmp_path / "p")
    (folder / "pipeline.json").unlink()
    with pytest.raises(DiveError, match="incomplete pipeline"):
        dive.load(folder)


@pytest.mark.parametrize("codec", [None, "float16", "int8", "binary", "pq", "lossless"])
def test_pipeline_searcher_takes_frozen_queries_and_scores_as_before(codec):
    pipeline, corpus = fitted_pipeline(codec if codec != "pq" else None)
    if codec == "pq":
        pipeline.fit_codec(create_codec("pq", m=4, nbits=4, niter=5), corpus)
    queries = random_unit(20, 32, seed=3)
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 5}": 1} for i in range(20)}
    eval_set = EvalSet(list(qrels), queries, qrels, [f"d{i}" for i in range(len(corpus))], corpus)
    searcher = pipeline.searcher(corpus)
    assert isinstance(searcher, Searcher)
    compressed = EvalSet(eval_set.query_ids, pipeline.transform(queries), eval_set.qrels, eval_set.doc_ids,
                         pipeline.transform(corpus))
    if codec is None:  # what Pipeline.evaluate computed before searchers
        before = evaluate_vectors(compressed.query_vectors, compressed.doc_vectors, compressed, (10, 50))
    else:
        before = evaluate_codec(pipeline.codec, compressed, (10, 50))
    assert evaluate_searcher(searcher, queries, eval_set, (10, 50)) == before
    assert pipeline.evaluate(eval_set, (10, 50)) == before
