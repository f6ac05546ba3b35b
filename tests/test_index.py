"""dive index / dive search: the faiss index ranks like dive's evaluation of the same pipeline."""

import json
import re

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


def test_text_search_encodes_with_the_base_models_prompt_and_refuses_another_model(scifact_pca, tmp_path,
                                                                                   monkeypatch):
    from dataclasses import replace

    import dive.index
    from dive.encode import EncodeConfig, model_identity

    embeddings, _, method, _ = scifact_pca
    packaged = model_identity(EncodeConfig())
    prompted = Pipeline(method, base_model=replace(packaged, query_prompt="query: "))
    prompted.save(tmp_path / "prompted")
    build_index(prompted, tmp_path / "prompted", embeddings.doc_ids, embeddings.doc_vectors, tmp_path / "p.faiss")
    seen = []
    monkeypatch.setattr(dive.index, "encode_texts", lambda texts, config, desc, prompt: seen.append(prompt)
                        or embeddings.query_vectors[:len(texts)])
    load_index(tmp_path / "p.faiss").search(["aspirin"], 3)
    assert seen == ["query: "]  # the prompt the pipeline's vectors were made with

    other = Pipeline(method, base_model=replace(packaged, sha256="0" * 64, name="other-model"))
    other.save(tmp_path / "other")
    build_index(other, tmp_path / "other", embeddings.doc_ids, embeddings.doc_vectors, tmp_path / "o.faiss")
    with pytest.raises(DiveError, match="base model mismatch: the pipeline was fitted on: other-model .*"
                                        f"the index's query model: {re.escape(str(packaged))}"):
        load_index(tmp_path / "o.faiss").search(["aspirin"], 3)
    assert seen == ["query: "]  # refused before encoding


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


# ----- own vectors, engines, TREC runs, evaluate --index (issue 23 items 1, 2, 7) ---------------

@pytest.fixture
def toy_files(tmp_path):
    """A BEIR folder, its vectors as `dive embed` writes them, the same as plain files, and a pipeline."""
    import numpy as np

    from dive.encode import save_embeddings
    from helpers import synthetic_embeddings, write_beir

    write_beir(tmp_path / "toy", n_docs=60, n_queries=24)
    embeddings = synthetic_embeddings(60, 24, 16)
    save_embeddings(embeddings, tmp_path / "vectors")
    np.save(tmp_path / "docs.npy", embeddings.doc_vectors)
    (tmp_path / "ids.txt").write_text("\n".join(embeddings.doc_ids) + "\n")
    np.save(tmp_path / "queries.npy", embeddings.query_vectors)
    (tmp_path / "query_ids.txt").write_text("\n".join(embeddings.query_ids) + "\n")
    pipeline = Pipeline(create_method("pca", dim=8).fit(TrainSet.unsupervised(embeddings.doc_vectors)))
    pipeline.fit_codec(create_codec("int8"), embeddings.doc_vectors)
    pipeline.save(tmp_path / "pipeline")
    return tmp_path


def run_cli(argv, capsys):
    from cli_harness import run_in_process

    return run_in_process([str(part) for part in argv], capsys)


@pytest.mark.parametrize("engine", ["lancedb", "qdrant", "faiss"])
def test_cli_own_vectors_to_a_trec_run_and_evaluate(toy_files, capsys, engine):
    import pytrec_eval

    from cli_harness import assert_success

    root = toy_files
    out = root / ("idx.faiss" if engine == "faiss" else "idx")
    built = run_cli(["index", "--pipeline", root / "pipeline", "--input", root / "docs.npy", "--ids", root / "ids.txt",
                     "--engine", engine, "--out", out], capsys)
    assert_success(built)
    assert json.loads(built.stdout)["engine"] == engine
    searched = run_cli(["search", "--index", out, "--query-vectors", root / "queries.npy", "--query-ids",
                        root / "query_ids.txt", "--top", "7", "--run", root / "run.trec", "--tag", "mine"], capsys)
    assert_success(searched)
    lines = (root / "run.trec").read_text().splitlines()
    assert len(lines) == 24 * 7 and all(len(line.split()) == 6 for line in lines)
    qid, iteration, docid, rank, score, tag = lines[0].split()
    assert (qid, iteration, rank, tag) == ("q0", "Q0", "1", "mine") and docid.startswith("d")
    with open(root / "run.trec") as handle:
        run = pytrec_eval.parse_run(handle)
    assert set(run) == {f"q{i}" for i in range(24)} and all(len(docs) == 7 for docs in run.values())
    evaluated = run_cli(["evaluate", "--index", out, "--dataset", root / "toy", "--vectors", root / "vectors",
                         "--json"], capsys)
    assert_success(evaluated)
    report = json.loads(evaluated.stdout)
    assert report["engine"] == engine and report["exact"]
    assert report["metrics"]["ndcg@10"] == pytest.approx(report["dive_metrics"]["ndcg@10"], abs=1e-4)


def test_cli_default_engine_is_lancedb_and_the_folder_moves(toy_files, capsys):
    import shutil

    from cli_harness import assert_success

    root = toy_files
    built = run_cli(["index", "--pipeline", root / "pipeline", "--dataset", root / "toy", "--vectors", root / "vectors",
                     "--out", root / "idx"], capsys)
    assert_success(built)
    assert json.loads(built.stdout)["engine"] == "lancedb" and (root / "idx" / "index.json").is_file()
    before = run_cli(["search", "--index", root / "idx", "--query-vectors", root / "queries.npy", "--json"], capsys)
    shutil.move(root / "idx", root / "moved")
    shutil.move(root / "pipeline", root / "pipeline-gone")
    after = run_cli(["search", "--index", root / "moved", "--query-vectors", root / "queries.npy", "--json"], capsys)
    assert_success(after)
    assert json.loads(after.stdout)["results"] == json.loads(before.stdout)["results"]


def test_cli_parquet_input_with_an_id_column(toy_files, capsys):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cli_harness import assert_success

    root = toy_files
    vectors = np.load(root / "docs.npy")
    table = pa.table({"_id": [f"d{i}" for i in range(len(vectors))], "title": [f"t{i}" for i in range(len(vectors))],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})
    pq.write_table(table, root / "docs.parquet")
    built = run_cli(["index", "--pipeline", root / "pipeline", "--input", root / "docs.parquet", "--engine", "qdrant",
                     "--out", root / "idx"], capsys)
    assert_success(built)
    index = load_index(root / "idx")
    try:
        assert index.doc_ids[:2] == ["d0", "d1"]
        assert index.searcher.searcher.client.retrieve("dive", [3])[0].payload == {"doc_id": "d3", "title": "t3"}
    finally:
        index.close()


def test_cli_query_texts_from_a_jsonl_file(tmp_path, capsys):
    """--queries encodes each text with the index's model (the packaged one): ids come from the file."""
    from cli_harness import assert_success

    corpus = random_unit(50, 384, seed=0)
    pipeline = Pipeline(create_method("pca", dim=16).fit(TrainSet.unsupervised(corpus)))
    pipeline.save(tmp_path / "pipeline")
    build_index(pipeline, tmp_path / "pipeline", [f"d{i}" for i in range(50)], corpus, tmp_path / "idx")
    (tmp_path / "queries.jsonl").write_text('{"_id": "a", "text": "vitamin D"}\n{"_id": "b", "text": "aspirin"}\n')
    result = run_cli(["search", "--index", tmp_path / "idx", "--queries", tmp_path / "queries.jsonl", "--top", "3",
                      "--run", tmp_path / "run.trec"], capsys)
    assert_success(result)
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["a"] * 3 + ["b"] * 3


@pytest.mark.parametrize("argv,message", [
    (["search", "--index", "{root}/idx", "--query-vectors", "{root}/wrong.npy"], ["dimension 5", "16-d"]),
    (["search", "--index", "{root}/idx", "--query-vectors", "{root}/queries.npy", "--query-ids", "{root}/ids.txt"],
     ["60 ids", "24 vectors"]),
    (["index", "--pipeline", "{root}/pipeline", "--input", "{root}/docs.npy", "--dataset", "toy", "--out", "{root}/x"],
     ["--dataset", "--input"]),
    (["index", "--pipeline", "{root}/pipeline", "--input", "{root}/docs.npy", "--ids", "{root}/query_ids.txt",
      "--out", "{root}/x"], ["24 ids", "60 vectors"]),
    (["index", "--pipeline", "{root}/pipeline", "--input", "{root}/docs.npy", "--engine", "faiss", "--factory",
      "HNSW16", "--out", "{root}/x.faiss"], ["--factory", "without a codec"]),
    (["evaluate", "--index", "{root}/idx", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--load",
      "{root}/pipeline"], ["--index", "--load"]),
])
def test_cli_bad_requests_are_one_line_and_write_nothing(toy_files, capsys, argv, message):
    import numpy as np

    from cli_harness import assert_one_clear_line

    root = toy_files
    np.save(root / "wrong.npy", np.ones((3, 5), dtype=np.float32))
    run_cli(["index", "--pipeline", root / "pipeline", "--input", root / "docs.npy", "--out", root / "idx"], capsys)
    result = run_cli([part.format(root=root) for part in argv], capsys)
    assert_one_clear_line(result, message)
    assert not (root / "x").exists() and not (root / "x.faiss").exists()
    assert not list(root.glob(".*.tmp")), "no temp file or folder left"
