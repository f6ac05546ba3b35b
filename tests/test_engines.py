"""Index engines: the real embedded LanceDB and Qdrant local mode (no mocks) rank like dive's evaluation.

A small synthetic corpus (query i lies near documents i and i + 1), a PCA pipeline with each codec,
indexed by every engine, scored through the engine's own search and by dive's evaluation.
"""

import shutil

import numpy as np
import pytest

from dive.data import EvalSet, TrainSet
from dive.engines import ENGINES, EngineConfig
from dive.errors import DiveError
from dive.index import MANIFEST_FILE, build_index, evaluate_index, load_index
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec
from helpers import random_unit

pytest.importorskip("lancedb")
pytest.importorskip("qdrant_client")

N_DOCS, N_QUERIES, DIM, OUT_DIM = 300, 40, 32, 16
TOLERANCE = 1e-4
"""nDCG@10 through an exact engine equals dive's evaluation within this (the issue's bound)."""
EXACT = [(engine, codec) for engine in ("lancedb", "qdrant", "faiss") for codec in (None, "float16", "int8")]


@pytest.fixture(scope="module")
def toy():
    corpus = random_unit(N_DOCS, DIM, seed=0)
    queries = corpus[:N_QUERIES] + 0.6 * random_unit(N_QUERIES, DIM, seed=1)
    doc_ids = [f"d{i}" for i in range(N_DOCS)]
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 1}": 2} for i in range(N_QUERIES)}
    return EvalSet(list(qrels), queries, qrels, doc_ids, corpus)


def saved_pipeline(toy, folder, codec=None, **settings):
    pipeline = Pipeline(create_method("pca", dim=OUT_DIM).fit(TrainSet.unsupervised(toy.doc_vectors)))
    if codec:
        pipeline.fit_codec(create_codec(codec, **settings), toy.doc_vectors)
    pipeline.save(folder)
    return pipeline


def out_path(tmp_path, engine, name="index"):
    return tmp_path / (f"{name}.faiss" if engine == "faiss" else name)


@pytest.mark.parametrize("engine,codec", EXACT, ids=lambda value: str(value))
def test_exact_engines_score_as_dives_evaluation(toy, tmp_path, engine, codec):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", codec)
    out = out_path(tmp_path, engine)
    summary = build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, out,
                          config=EngineConfig(engine=engine))
    assert summary["engine"] == engine and summary["exact"] and summary["n_vectors"] == N_DOCS
    index = load_index(out)
    try:
        report = evaluate_index(index, toy, (10,))
    finally:
        index.close()
    expected = pipeline.evaluate(toy, (10,))
    assert report["dive_metrics"] == expected
    assert report["metrics"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=TOLERANCE)
    assert report["exact"] and report["engine"] == engine


@pytest.mark.parametrize("engine", ["lancedb", "qdrant"])
def test_pq_maps_to_the_databases_own_storage_and_reports_both(toy, tmp_path, engine):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", "pq", m=4)
    out = tmp_path / "index"
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, out, config=EngineConfig(engine=engine))
    index = load_index(out)
    try:
        report = evaluate_index(index, toy, (10,))
    finally:
        index.close()
    assert set(report) >= {"metrics", "dive_metrics", "difference"}
    assert report["dive_metrics"] == pipeline.evaluate(toy, (10,))
    assert report["difference"]["ndcg@10"] == pytest.approx(report["metrics"]["ndcg@10"]
                                                            - report["dive_metrics"]["ndcg@10"])
    if engine == "lancedb":  # an IVF-PQ index (LanceDB's own codebooks), rescored by the stored floats
        assert not index.exact and load_json(out)["ann_index"] == "IVF_PQ"
    else:  # Qdrant's product quantisation is recorded; local mode scans every point
        assert load_json(out)["quantization"] == "pq"
        assert report["metrics"]["ndcg@10"] == pytest.approx(report["dive_metrics"]["ndcg@10"], abs=TOLERANCE)


def test_qdrant_binary_keeps_dives_bits_and_rescores(toy, tmp_path):
    """Stored vectors are centred on the medians: their signs are dive's bits; scores are q . reconstruction."""
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", "binary", rescore=N_DOCS)
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "index",
                config=EngineConfig(engine="qdrant"))
    index = load_index(tmp_path / "index")
    try:
        report = evaluate_index(index, toy, (10,))
        scores, _ = index.search_vectors(toy.query_vectors[:3], 5)
    finally:
        index.close()
    # rescoring every candidate: dive's binary ranking is the float query x the 1-bit reconstruction
    assert report["metrics"]["ndcg@10"] == pytest.approx(report["dive_metrics"]["ndcg@10"], abs=TOLERANCE)
    reference, _ = pipeline.searcher(toy.doc_vectors).search(toy.query_vectors[:3], 5)
    np.testing.assert_allclose(scores, reference, atol=1e-5)


def test_lancedb_binary_is_hamming_over_dives_bits(toy, tmp_path):
    """Packed bits in LanceDB's binary vectors, Hamming distance: dive's binary search without rescoring
    (the same scores; documents tied on a score may come in another order)."""
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", "binary")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "index")
    index = load_index(tmp_path / "index")
    scores, rows = index.search_vectors(toy.query_vectors, 10)
    reference, _ = pipeline.searcher(toy.doc_vectors).search(toy.query_vectors, 10)
    np.testing.assert_array_equal(scores, reference)
    codes = pipeline.encode(toy.doc_vectors)
    query_bits = pipeline.codec.bits(pipeline.transform(toy.query_vectors))
    hamming = np.unpackbits(query_bits[:, None, :] ^ codes[rows], axis=2).sum(axis=2)
    np.testing.assert_array_equal(scores, OUT_DIM - 2 * hamming), "each score is its row's Hamming agreement"


@pytest.mark.parametrize("engine", ["lancedb", "qdrant"])
def test_an_index_folder_moves(toy, tmp_path, engine):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", "int8")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "built",
                config=EngineConfig(engine=engine))
    index = load_index(tmp_path / "built")
    before = index.search_vectors(toy.query_vectors, 10)
    index.close()
    moved = tmp_path / "elsewhere" / "deeper" / "moved"
    shutil.copytree(tmp_path / "built", moved)
    shutil.rmtree(tmp_path / "built")
    shutil.rmtree(tmp_path / "pipeline")  # the folder holds its own copy of the pipeline
    index = load_index(moved)
    try:
        after = index.search_vectors(toy.query_vectors, 10)
    finally:
        index.close()
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert str(tmp_path) not in (moved / MANIFEST_FILE).read_text(), "the manifest holds no absolute path"


def test_a_faiss_index_moves_with_its_pipeline(toy, tmp_path):
    """The faiss manifest names its pipeline relative to itself: a project folder moved whole still loads."""
    pipeline = saved_pipeline(toy, tmp_path / "project" / "pipeline")
    build_index(pipeline, tmp_path / "project" / "pipeline", toy.doc_ids, toy.doc_vectors,
                tmp_path / "project" / "indexes" / "toy.faiss")
    manifest = load_json(tmp_path / "project" / "indexes" / "toy.faiss")
    assert manifest["pipeline"] == "../pipeline" and manifest["engine"] == "faiss"
    shutil.move(tmp_path / "project", tmp_path / "moved")
    index = load_index(tmp_path / "moved" / "indexes" / "toy.faiss")
    assert evaluate_index(index, toy, (10,))["difference"]["ndcg@10"] == 0


def test_a_qdrant_local_index_in_use_is_one_line(toy, tmp_path):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "index",
                config=EngineConfig(engine="qdrant"))
    first = load_index(tmp_path / "index")
    try:
        with pytest.raises(DiveError, match="in use by another Qdrant client"):
            load_index(tmp_path / "index")
    finally:
        first.close()
    load_index(tmp_path / "index").close()  # free again once closed


def test_an_altered_qdrant_storage_is_refused_before_it_is_read(toy, tmp_path):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "index",
                config=EngineConfig(engine="qdrant"))
    storage = next((tmp_path / "index" / "qdrant").rglob("storage.sqlite"))
    storage.write_bytes(storage.read_bytes()[:-100] + b"\0" * 100)
    with pytest.raises(DiveError, match="checksum does not match"):
        load_index(tmp_path / "index")


@pytest.mark.parametrize("factory", ["HNSW16", "IVF8,Flat", "IVF4,PQ4x4"])
def test_faiss_factory_builds_an_ann_index(toy, tmp_path, factory):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    summary = build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "ann.faiss",
                          config=EngineConfig(engine="faiss", factory=factory))
    assert not summary["exact"]
    index = load_index(tmp_path / "ann.faiss")
    report = evaluate_index(index, toy, (10,))
    assert not report["exact"] and 0 < report["metrics"]["ndcg@10"] <= 1
    assert load_json(tmp_path / "ann.faiss")["factory"] == factory


def test_faiss_search_params_are_kept_with_the_index(toy, tmp_path):
    """IVF8,Flat probing all 8 lists scans every vector: it ranks as dive's evaluation again."""
    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "ivf.faiss",
                config=EngineConfig(engine="faiss", factory="IVF8,Flat", search_params="nprobe=8"))
    index = load_index(tmp_path / "ivf.faiss")
    assert index.searcher.searcher.nprobe == 8
    report = evaluate_index(index, toy, (10,))
    assert report["metrics"]["ndcg@10"] == pytest.approx(report["dive_metrics"]["ndcg@10"], abs=TOLERANCE)
    with pytest.raises(DiveError, match="faiss refused"):
        build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "bad.faiss",
                    config=EngineConfig(engine="faiss", factory="HNSW16", search_params="nosuch=3"))
    assert not (tmp_path / "bad.faiss").exists()


def test_refusals_are_one_line_and_leave_nothing(toy, tmp_path):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline", "int8")
    cases = [(EngineConfig(engine="faiss", factory="HNSW16"), "ann.faiss", "without a codec"),
             (EngineConfig(engine="faiss", factory="NoSuchIndex"), "bad.faiss", "faiss refused"),
             (EngineConfig(engine="lancedb", factory="HNSW16"), "l", "--factory and --search-params are for"),
             (EngineConfig(engine="faiss", search_params="nprobe=4"), "p.faiss", "tunes a --factory index"),
             (EngineConfig(engine="lancedb", url="http://localhost:6333"), "l", "--url is for --engine qdrant"),
             (EngineConfig(engine="nosuch"), "n", "unknown engine")]
    Pipeline(pipeline.method).save(tmp_path / "plain")
    for config, name, message in cases:
        source = tmp_path / ("plain" if "refused" in message else "pipeline")
        with pytest.raises(DiveError, match=message) as error:
            build_index(Pipeline.load(source), source, toy.doc_ids, toy.doc_vectors, tmp_path / "out" / name,
                        config=config)
        assert "\n" not in str(error.value)
    binary = saved_pipeline(toy, tmp_path / "binary", "binary", rescore=10)
    with pytest.raises(DiveError, match="without rescoring"):
        build_index(binary, tmp_path / "binary", toy.doc_ids, toy.doc_vectors, tmp_path / "out" / "b")
    with pytest.raises(DiveError, match="unique"):
        build_index(pipeline, tmp_path / "pipeline", ["d0"] * N_DOCS, toy.doc_vectors, tmp_path / "out" / "dup")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_folder_that_is_not_an_index_is_not_overwritten(toy, tmp_path):
    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(DiveError, match="not a `dive index` index"):
        build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / "index")
    build_index(pipeline, tmp_path / "pipeline", toy.doc_ids[::-1], toy.doc_vectors[::-1], tmp_path / "index")
    assert load_index(tmp_path / "index").doc_ids == toy.doc_ids[::-1], "a rebuild replaces the index"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index", "notes", "pipeline"], "no temp left"


def test_other_columns_travel_with_the_vectors(toy, tmp_path):
    import pyarrow as pa

    pipeline = saved_pipeline(toy, tmp_path / "pipeline")
    columns = pa.table({"title": [f"title {i}" for i in range(N_DOCS)], "year": list(range(N_DOCS))})
    for engine in ("lancedb", "qdrant"):
        build_index(pipeline, tmp_path / "pipeline", toy.doc_ids, toy.doc_vectors, tmp_path / engine,
                    config=EngineConfig(engine=engine), columns=columns)
    import lancedb
    table = lancedb.connect(str(tmp_path / "lancedb" / "lancedb")).open_table("dive").to_arrow()
    assert table.column("title").to_pylist()[:2] == ["title 0", "title 1"]
    assert table.column("doc_id").to_pylist()[:2] == ["d0", "d1"]
    index = load_index(tmp_path / "qdrant")
    try:
        point = index.searcher.searcher.client.retrieve("dive", [7])[0]
    finally:
        index.close()
    assert point.payload == {"doc_id": "d7", "title": "title 7", "year": 7}


def test_every_engine_is_registered():
    assert set(ENGINES) == {"faiss", "lancedb", "qdrant"}
    assert EngineConfig().engine == "lancedb"


def load_json(path):
    import json

    manifest = path / MANIFEST_FILE if path.is_dir() else path.with_name(path.name + ".json")
    return json.loads(manifest.read_text())


@pytest.mark.parametrize("setting,value,message", [("oversampling", 0.5, "at least 1"), ("nprobes", 0, "at least 1"),
                                                   ("refine_factor", -1, "at least 0"), ("collection", " ", "non-empty")])
def test_engine_settings_are_checked(setting, value, message):
    with pytest.raises(DiveError, match=message):
        EngineConfig(**{setting: value})
