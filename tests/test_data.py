
from dataclasses import replace

import numpy as np
import pytest

from dive.data import (Embeddings, MiningConfig, SplitConfig, TrainSet, build_sampler, check_vectors,
                       load_beir, make_splits)
from dive.data.splits import Split, positive_only, without_near_duplicates
from dive.errors import DiveError
from helpers import random_unit, synthetic_embeddings, write_beir


# ---------- loading ----------

@pytest.mark.parametrize("gz", [False, True])
def test_load_beir_reads_plain_and_gzipped(tmp_path, gz):
    dataset = load_beir(write_beir(tmp_path / "toy", gz=gz))
    assert dataset.name == "toy"
    assert dataset.doc_ids[:2] == ["d0", "d1"]
    assert dataset.doc_texts[0] == "title 0 text of doc 0"
    assert dataset.splits == ["test", "train"]
    assert dataset.qrels["train"]["q0"] == {"d0": 1, "d1": 2}


def test_real_scifact_matches_its_readme():
    from conftest import require_shared_data

    dataset = load_beir(require_shared_data("scifact"))
    assert len(dataset.doc_ids) == 5183 and len(dataset.query_ids) == 1109
    assert len(dataset.qrels["train"]) == 809 and len(dataset.qrels["test"]) == 300
    assert sum(len(docs) for docs in dataset.qrels["test"].values()) == 339


def corrupt(folder, file, text):
    (folder / file).write_text(text)
    return folder


@pytest.mark.parametrize("file,text,message", [
    ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{not json\n', "corpus.jsonl:2: not valid JSON"),
    ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n', "duplicate id 'd0'"),
    ("corpus.jsonl", '{"text": "no id"}\n', "missing field '_id'"),
    ("queries.jsonl", '{"_id": "q0"}\n', "missing field 'text'"),
    ("corpus.jsonl", "[1, 2]\n", "expected a JSON object"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\tnope\t1\n", "document id 'nope' is not in the corpus"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nghost\td0\t1\n", "query id 'ghost' is not in the queries file"),
    ("qrels/test.tsv", "q0\td0\n", "expected 3 tab-separated columns"),
    ("qrels/test.tsv", "q0\td0\thigh\n", "score 'high' is not a number"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\n", "no relevance judgements"),
])
def test_malformed_files_give_one_line_errors_naming_the_file(tmp_path, file, text, message):
    folder = corrupt(write_beir(tmp_path / "toy"), file, text)
    with pytest.raises(DiveError, match=message) as caught:
        load_beir(folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("file,raw,message", [
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq0\td0\t1\n".encode("utf-16"), "test.tsv:1: not valid UTF-8"),
    ("corpus.jsonl", '{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": "caf\u00e9"}\n'.encode("latin-1"),
     "corpus.jsonl:2: not valid UTF-8"),
    ("qrels/test.tsv", b"q0\td0\tinf\n", "test.tsv:1: score 'inf' is not a finite number"),
])
def test_text_that_is_not_utf8_or_a_score_that_is_not_finite_is_one_line(tmp_path, file, raw, message):
    folder = write_beir(tmp_path / "toy")
    (folder / file).write_bytes(raw)
    with pytest.raises(DiveError, match=message) as caught:
        load_beir(folder)
    assert "\n" not in str(caught.value)


def test_a_bom_is_tolerated_and_a_folder_is_not_a_file(tmp_path):
    folder = write_beir(tmp_path / "toy")
    for name in ("corpus.jsonl", "qrels/test.tsv"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    assert load_beir(folder).doc_ids[0] == "d0"
    (folder / "qrels" / "x.tsv").mkdir()
    with pytest.raises(DiveError, match="x.tsv: not a file"):
        load_beir(folder)


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(DiveError, match="dataset folder not found"):
        load_beir(tmp_path / "absent")
    folder = write_beir(tmp_path / "toy")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DiveError, match="no queries.jsonl"):
        load_beir(folder)


# ---------- vectors ----------

@pytest.mark.parametrize("vectors,message", [
    (np.array([[np.nan, 1.0]], dtype=np.float32), "NaN or inf"),
    (np.array([[np.inf, 1.0]], dtype=np.float32), "NaN or inf"),
    (np.zeros((2, 3), dtype=np.float32), "all-zero vector"),
    (np.ones(3, dtype=np.float32), "2-D array"),
    (np.ones((2, 3), dtype=np.int64), "floating-point"),
])
def test_bad_vectors_are_rejected(vectors, message):
    with pytest.raises(DiveError, match=message):
        check_vectors(vectors, "vectors")


def test_dimension_and_count_mismatches_are_rejected():
    with pytest.raises(DiveError, match="dimension 4 does not match the expected 3"):
        check_vectors(np.ones((2, 4), np.float32), "vectors", dim=3)
    with pytest.raises(DiveError, match="query vectors: dimension 8"):
        Embeddings(["d0"], random_unit(1, 16), ["q0"], random_unit(1, 8))
    with pytest.raises(DiveError, match="2 vectors but 1 ids"):
        Embeddings(["d0"], random_unit(2, 16), ["q0"], random_unit(1, 16))


# ---------- protocols ----------

def test_heldout_never_trains_or_validates_on_test_queries(scifact):
    dataset, _ = scifact
    (split,) = make_splits(dataset, "heldout")
    test_queries = set(split.test)
    assert test_queries == set(dataset.qrels["test"])
    assert not test_queries & set(split.train)
    assert not test_queries & set(split.validation)
    assert not set(split.train) & set(split.validation)
    assert len(split.validation) == round(0.2 * len(positive_only(dataset.qrels["train"])))


@pytest.mark.parametrize("n_train,expected", [(809, 162), (180, 50), (100, 35), (40, 14), (1000, 200)])
def test_the_validation_slice_is_a_fifth_with_a_floor_of_50_queries_capped_at_35_percent(n_train, expected):
    assert SplitConfig().validation_size(n_train) == expected
    assert SplitConfig(validation_fraction=0).validation_size(n_train) == 0


def test_the_strict_view_drops_test_queries_with_a_near_duplicate_train_query():
    vectors = random_unit(4, 16, seed=0)
    near_copy = vectors[0] + 0.05 * random_unit(1, 16, seed=1)[0]
    query_vectors = np.vstack([vectors, near_copy / np.linalg.norm(near_copy)]).astype(np.float32)
    split = Split("fold-1", "heldout", train={"q0": {"d0": 1}, "q1": {"d1": 1}}, validation={"q2": {"d2": 1}},
                  test={"q3": {"d3": 1}, "q4": {"d0": 1}})
    strict, dropped = without_near_duplicates(split, ["q0", "q1", "q2", "q3", "q4"], query_vectors, 0.9)
    assert dropped == 1 and set(strict.test) == {"q3"} and strict.train == split.train
    assert without_near_duplicates(split, ["q0", "q1", "q2", "q3", "q4"], query_vectors, 1.0)[1] == 0
    with pytest.raises(DiveError, match="every test query has a near-duplicate"):
        without_near_duplicates(replace(split, test={"q4": {"d0": 1}}), ["q0", "q1", "q2", "q3", "q4"],
                                query_vectors, 0.9)


def test_heldout_training_triplets_contain_no_test_query(scifact):
    dataset, embeddings = scifact
    (split,) = make_splits(dataset, "heldout")
    train_set = TrainSet.from_split(embeddings, split)
    train_queries = sorted(split.train)
    triplets = train_set.triplets(np.random.default_rng(0))
    used = {train_queries[row] for row in np.unique(triplets[:, 0])}
    assert used == set(split.train)
    assert not used & set(split.test)
    assert not set(train_set.validation.query_ids) & set(split.test)


def test_paper_protocol_trains_on_test_queries_and_says_so(scifact):
    dataset, _ = scifact
    (split,) = make_splits(dataset, "paper")
    assert split.transductive
    assert set(split.test) <= set(split.train)
    assert not split.validation


def test_kfold_for_test_only_datasets_partitions_the_test_queries(tmp_path):
    dataset = load_beir(write_beir(tmp_path / "toy", n_docs=40, n_queries=20, splits=("test",)))
    splits = make_splits(dataset, "heldout", SplitConfig(n_folds=5))
    assert [s.name for s in splits] == [f"fold-{i}" for i in range(1, 6)]
    tested = [q for s in splits for q in s.test]
    assert sorted(tested) == sorted(dataset.qrels["test"])  # every query tested exactly once
    for split in splits:
        assert not set(split.test) & (set(split.train) | set(split.validation))
    # the same folds for every call (every method) whatever the training seed
    again = make_splits(dataset, "heldout", SplitConfig(n_folds=5))
    assert [s.test for s in again] == [s.test for s in splits]


def test_unknown_protocol_and_missing_test_split(tmp_path):
    dataset = load_beir(write_beir(tmp_path / "toy", splits=("train",)))
    with pytest.raises(DiveError, match="unknown protocol"):
        make_splits(dataset, "cheat")
    with pytest.raises(DiveError, match="no qrels/test.tsv"):
        make_splits(dataset, "heldout")


# ---------- triplet mining ----------

def toy_sampler(negatives="hard", n_docs=30, n_queries=12, identical_ids=False):
    embeddings = synthetic_embeddings(n_docs, n_queries)
    query_ids = [f"d{i}" if identical_ids else f"q{i}" for i in range(n_queries)]
    qrels = {query_ids[i]: {f"d{i}": 1, f"d{i + 1}": 0} for i in range(n_queries)}
    sampler = build_sampler(query_ids, embeddings.query_vectors, embeddings.doc_ids, embeddings.doc_vectors,
                            qrels, MiningConfig(negatives=negatives, hard_top_k=5))
    return sampler, qrels


@pytest.mark.parametrize("negatives", ["hard", "random"])
def test_negatives_are_never_relevant_nor_the_query_itself(negatives):
    sampler, _ = toy_sampler(negatives, identical_ids=True)
    for seed in range(5):
        triplets = sampler.sample(np.random.default_rng(seed))
        assert len(triplets) == 12 * 4  # 4 negatives per positive pair (score-0 judgements are not positives)
        query_rows, positive_rows, negative_rows = triplets.T
        assert np.all(positive_rows == query_rows)  # query i's only positive is doc i
        assert not np.any(negative_rows == query_rows)  # identical id and relevant doc excluded
        assert not np.any(negative_rows == query_rows + 1)  # judged (score 0) doc is not sampled either


def test_hard_negatives_come_from_the_frozen_top_k():
    sampler, _ = toy_sampler("hard")
    embeddings = synthetic_embeddings()
    top = np.argsort(-embeddings.query_vectors @ embeddings.doc_vectors.T, axis=1)[:, :5]
    triplets = sampler.sample(np.random.default_rng(0))
    for query_row, _, negative_row in triplets:
        assert negative_row in top[query_row]


def test_negatives_are_redrawn_each_epoch_and_reproducible_per_seed():
    sampler, _ = toy_sampler("random")
    first = sampler.sample(np.random.default_rng(0))
    assert np.array_equal(first, sampler.sample(np.random.default_rng(0)))
    assert not np.array_equal(first, sampler.sample(np.random.default_rng(1)))


def test_empty_training_set_and_unknown_ids_fail_clearly():
    embeddings = synthetic_embeddings()
    with pytest.raises(DiveError, match="training set is empty"):
        build_sampler(["q0"], embeddings.query_vectors[:1], embeddings.doc_ids, embeddings.doc_vectors,
                      {"q0": {"d0": 0}})
    with pytest.raises(DiveError, match="document 'ghost'"):
        build_sampler(["q0"], embeddings.query_vectors[:1], embeddings.doc_ids, embeddings.doc_vectors,
                      {"q0": {"ghost": 1}})
    with pytest.raises(DiveError, match="needs labelled query-document pairs"):
        from dive.methods import create_method

        create_method("dive", dim=4).fit(TrainSet.unsupervised(embeddings.doc_vectors))


@pytest.mark.parametrize("settings,message", [
    ({"n_folds": 1}, "n_folds must be at least 2, got 1"),
    ({"n_folds": 2.5}, "n_folds must be an integer"),
    ({"validation_fraction": 1.0}, "validation_fraction must be between 0 and 1"),
    ({"validation_fraction": -0.5}, "validation_fraction must be between 0 and 1"),
    ({"validation_fraction": float("nan")}, "validation_fraction must be a finite number"),
])
def test_split_config_refuses_impossible_partitions(settings, message):
    with pytest.raises(DiveError, match=message):
        SplitConfig(**settings)
    assert SplitConfig(n_folds=2, validation_fraction=0.0).validation_fraction == 0.0  # 0: no validation slice


def test_config_rejects_bad_mining_settings():
    with pytest.raises(DiveError):
        MiningConfig(negatives="semi-hard")
    with pytest.raises(DiveError):
        MiningConfig(negatives_per_positive=0)


def test_vector_folders_round_trip_and_refuse_pickles(tmp_path):
    from dive.encode import load_embeddings, save_embeddings

    embeddings = synthetic_embeddings()
    save_embeddings(embeddings, tmp_path)
    loaded = load_embeddings(tmp_path)
    assert loaded.doc_ids == embeddings.doc_ids
    np.testing.assert_allclose(loaded.doc_vectors, embeddings.doc_vectors, atol=1e-6)
    (tmp_path / "query_ids.txt").unlink()
    with pytest.raises(DiveError, match="query_ids.txt: missing"):
        load_embeddings(tmp_path)
    np.save(tmp_path / "corpus.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DiveError, match="not a readable .npy"):
        load_embeddings(tmp_path)
