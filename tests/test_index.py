"""dive index / dive search: the faiss index ranks like dive's evaluation of the same pipeline."""

import json

import pytest

from dive.data import EvalSet, TrainSet, make_splits
from dive.errors import DiveError
from dive.evaluate import evaluate_searcher, rankings_to_run, score_run
from dive.index import build_index, load_index
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec
from dive.search import Searcher
from conftest import SHARED_DATA
from helpers import random_unit

CODECS = [None, ("float16", {}), ("int8", {}), ("pq", {"m": 16}), ("binary", {})]


@pytest.fixture(scope="module")
def scifact_pca(scifact, tmp_path_factory):
    dataset, embeddings = scifact
    method = create_method("pca", dim=64).fit(TrainSet.unsupervised(embeddings.doc_vectors))
    eval_set = embeddings.eval_set(make_splits(dataset)[0].test)
    return embeddings, eval_set, method, tmp_path_factory.mktemp("pipelines")


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec[0] if codec else "none")
def test_index_ranks_like_the_pipelines_evaluation(scifact_pca, tmp_path, codec):
    embeddings, eval_set, method, folders = scifact_pca
    pipeline = Pipeline(method)
    if codec:
        pipeline.fit_codec(create_codec(codec[0], **codec[1]), embeddings.doc_vectors)
    pipeline.save(folders / str(codec))
    summary = build_index(pipeline, folders / str(codec), embeddings.doc_ids, embeddings.doc_vectors,
                          tmp_path / "scifact.faiss")
    assert summary["n_vectors"] == len(embeddings.doc_ids)
    index = load_index(tmp_path / "scifact.faiss")
    scores, rows = index.search_vectors(eval_set.query_vectors, 11)
    from_index = score_run(rankings_to_run(eval_set.query_ids, index.doc_ids, scores, rows, 10), eval_set.qrels)
    expected = pipeline.evaluate(eval_set, (10,))
    assert from_index["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=2e-4)


def test_cli_index_then_search_with_text(scifact_pca, tmp_path, capsys):
    from dive.cli import main

    embeddings, _, method, _ = scifact_pca
    pipeline = Pipeline(method)
    pipeline.fit_codec(create_codec("int8"), embeddings.doc_vectors)
    pipeline.save(tmp_path / "pipeline")
    out = tmp_path / "scifact.faiss"
    assert main(["index", "--pipeline", str(tmp_path / "pipeline"), "--dataset", "scifact",
                 "--data-dir", str(SHARED_DATA), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["faiss_index"] == "IndexScalarQuantizer"
    assert main(["search", "--index", str(out), "--query", "vitamin D deficiency and bone fractures",
                 "--query", "aspirin", "--top", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [len(result["hits"]) for result in results] == [5, 5]
    assert all(hit["doc_id"] in set(embeddings.doc_ids) for hit in results[0]["hits"])
    scores = [hit["score"] for hit in results[0]["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_altered_index_and_unsupported_codecs_fail_clearly(scifact_pca, tmp_path):
    embeddings, _, method, _ = scifact_pca
    pipeline = Pipeline(method)
    pipeline.save(tmp_path / "pipeline")
    out = tmp_path / "scifact.faiss"
    build_index(pipeline, tmp_path / "pipeline", embeddings.doc_ids, embeddings.doc_vectors, out)
    with out.open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(DiveError, match="checksum does not match"):
        load_index(out)
    out.with_name("scifact.faiss.json").unlink()
    with pytest.raises(DiveError, match="not written by `dive index`"):
        load_index(out)
    pipeline.fit_codec(create_codec("binary", rescore=100), embeddings.doc_vectors)
    with pytest.raises(DiveError, match="rescoring is not part of a faiss index"):
        build_index(pipeline, tmp_path / "pipeline", embeddings.doc_ids, embeddings.doc_vectors, tmp_path / "b.faiss")
    with pytest.raises(DiveError, match="ids but"):
        build_index(pipeline, tmp_path / "pipeline", embeddings.doc_ids[:5], embeddings.doc_vectors, out)
    assert not (tmp_path / "b.faiss").exists()


@pytest.mark.parametrize("codec", [None, "int8", "binary"])
def test_a_loaded_index_is_a_searcher_over_frozen_queries(tmp_path, codec):
    corpus = random_unit(300, 32, seed=0)
    queries = corpus[:12] + 0.3 * random_unit(12, 32, seed=1)  # query i lies near doc i
    pipeline = Pipeline(create_method("pca", dim=16).fit(TrainSet.unsupervised(corpus)))
    if codec:
        pipeline.fit_codec(create_codec(codec), corpus)
    pipeline.save(tmp_path / "pipeline")
    doc_ids = [f"d{i}" for i in range(len(corpus))]
    build_index(pipeline, tmp_path / "pipeline", doc_ids, corpus, tmp_path / "toy.faiss")
    index = load_index(tmp_path / "toy.faiss")
    assert isinstance(index.searcher, Searcher)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(12)}
    eval_set = EvalSet(list(qrels), queries, qrels, doc_ids, corpus)
    from_index = evaluate_searcher(index.searcher, queries, eval_set)
    expected = pipeline.evaluate(eval_set, (10,))
    if codec is None:  # the same FlatSearch over the same rows
        assert from_index == expected
    else:  # faiss's codes search may swap near-ties
        assert from_index["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=2e-4)
