"""dive.quantize: post-hoc codecs behave as documented (round trips, retrieval quality, sizes, files).

Real-data tests use the session ``scifact`` fixture of conftest.py (frozen all-MiniLM-L6-v2
vectors, from the embedding cache) and skip without the shared data, failing under CI=true.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dive.data import EvalSet, make_splits
from dive.errors import DiveError
from dive.evaluate import evaluate_method, evaluate_searcher, rankings_to_run, score_run
from dive.quantize import CODECS, Codec, create_codec, evaluate_codec, load_codec, retrieve_codes
from dive.quantize.base import blocked_search
from dive.search import Searcher, exact_search

FAST = {"float16": {}, "int8": {}, "binary": {"rescore": 20}, "pq": {"m": 8, "nbits": 5, "niter": 5},
        "lossless": {"level": 3}}
"""Settings that fit in well under a second on a few hundred vectors."""


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32) + np.linspace(-0.5, 0.5, dim, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def scifact_test(scifact):
    """(Embeddings, EvalSet of the heldout scifact test queries)."""
    dataset, embeddings = scifact
    split = make_splits(dataset)[0]
    return embeddings, embeddings.eval_set(split.test)


@pytest.fixture(scope="module")
def frozen_ndcg(scifact_test):
    return evaluate_method(None, scifact_test[1])["ndcg@10"]


# ----- registry, configs, validation ------------------------------------------------------------

def test_registry_names_and_configs():
    assert set(CODECS) == {"float16", "int8", "binary", "pq", "lossless"}
    for name, cls in CODECS.items():
        assert cls.name == name and issubclass(cls, Codec)
        assert cls.Config.__doc__ and cls.summary and cls.reference
        with pytest.raises(Exception):  # frozen dataclass
            setattr(cls.Config(), "x", 1)
    with pytest.raises(DiveError, match="unknown codec"):
        create_codec("int4")
    with pytest.raises(DiveError, match="unknown setting 'M'"):
        create_codec("pq", M=16)
    for name, settings in {"binary": {"rescore": -1}, "binary ": {"rescore_with": "float32"},
                           "pq": {"nbits": 0}, "pq ": {"m": 0}, "lossless": {"level": 0},
                           "int8": {"calibration_quantile": 0.5}}.items():
        with pytest.raises(DiveError):
            create_codec(name.strip(), **settings)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_validation_errors(name):
    corpus = unit_rows(300, 32)
    codec = create_codec(name, **FAST[name])
    for call in (lambda: codec.encode(corpus), lambda: codec.search(corpus[:2], np.zeros((3, 4), np.uint8), 1),
                 lambda: codec.bytes_per_vector, lambda: codec.save("/nonexistent/never-written")):
        with pytest.raises(DiveError, match="fit"):
            call()
    with pytest.raises(DiveError, match="NaN"):
        create_codec(name, **FAST[name]).fit(np.where(np.arange(32) == 3, np.nan, corpus).astype(np.float32))
    codec.fit(corpus)
    with pytest.raises(DiveError, match="dimension 16 does not match"):
        codec.encode(corpus[:, :16])
    bad = corpus[:5].copy()
    bad[2, 7] = np.nan
    with pytest.raises(DiveError, match="NaN"):
        codec.encode(bad)
    codes = codec.encode(corpus)
    with pytest.raises(DiveError, match="dimension"):
        codec.search(corpus[:3, :16], codes, 5)
    with pytest.raises(DiveError, match="NaN"):
        codec.search(bad, codes, 5)
    with pytest.raises(DiveError, match="k must be"):
        codec.search(corpus[:3], codes, 0)
    with pytest.raises(DiveError, match="codes"):
        codec.search(corpus[:3], codes.astype(np.float64), 5)
    with pytest.raises(DiveError, match="codes"):
        codec.search(corpus[:3], codes[..., None], 5)


def test_pq_rejects_bad_m_and_small_corpus():
    with pytest.raises(DiveError, match=r"m=10 .* does not divide the dimension 384"):
        create_codec("pq", m=10).fit(unit_rows(300, 384))
    with pytest.raises(DiveError, match="too few to train 256 centroids"):
        create_codec("pq", m=16, nbits=8).fit(unit_rows(200, 64))
    with pytest.raises(DiveError, match="nbits must be"):
        create_codec("pq", nbits=17)


def test_bytes_per_vector():
    corpus = unit_rows(300, 384)
    expected = {("float16", ()): 768, ("int8", ()): 384, ("binary", ()): 48, ("binary", (("rescore", 100),)): 48,
                ("binary", (("rescore", 100), ("rescore_with", "int8"))): 48 + 384,
                ("pq", (("m", 16), ("nbits", 8), ("niter", 1))): 16, ("pq", (("m", 48), ("nbits", 4), ("niter", 1))): 24}
    for (name, settings), size in expected.items():
        codec = create_codec(name, **dict(settings)).fit(corpus)
        codes = codec.encode(corpus[:7])
        assert codec.bytes_per_vector == size, (name, settings)
        assert codes.nbytes == 7 * size, (name, settings)
    odd = create_codec("binary").fit(unit_rows(50, 20))
    assert odd.bytes_per_vector == 3 and odd.encode(unit_rows(4, 20)).shape == (4, 3)


# ----- behaviour on synthetic vectors -----------------------------------------------------------

def test_lossless_is_bit_exact_on_awkward_floats():
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2 ** 32, size=(64, 24), dtype=np.uint64).astype(np.uint32)
    words[(words >> 23 & 0xFF) == 0xFF] &= ~np.uint32(1 << 30)  # no inf/NaN exponents
    words[0, :4] = [0x80000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF]  # -0.0, denormals, max float
    vectors = words.view(np.float32)
    codec = create_codec("lossless", level=3).fit(vectors)
    codes = codec.encode(vectors)
    assert codes.ndim == 1 and codes.dtype == np.uint8
    assert np.array_equal(codec.decode(codes).view(np.uint32), words)
    assert codec.bytes_per_vector == codes.nbytes / len(vectors)
    with pytest.raises(DiveError, match="float32"):
        codec.encode(vectors.astype(np.float64))
    with pytest.raises(DiveError, match="truncated"):
        codec.decode(codes[:-1])
    with pytest.raises(DiveError, match="measured"):
        _ = create_codec("lossless").fit(vectors).bytes_per_vector


def test_int8_error_bound_and_clipping():
    corpus = unit_rows(500, 48)
    codec = create_codec("int8").fit(corpus)
    step = (corpus.max(0) - corpus.min(0)) / 255
    assert np.all(np.abs(codec.decode(codec.encode(corpus)) - corpus) <= step / 2 + 1e-6)
    outside = np.full((1, 48), 5.0, np.float32)
    assert np.array_equal(codec.encode(outside), np.full((1, 48), 255, np.uint8))


def test_int8_dimension_too_narrow_for_a_float32_step_decodes_to_its_low_value():
    corpus = unit_rows(10, 4)
    corpus[:, 1] = 0.0
    corpus[3, 1] = np.float32(1e-44)  # width / 255 underflows to 0 in float32
    codec = create_codec("int8").fit(corpus)
    with np.errstate(all="raise"):
        decoded = codec.decode(codec.encode(corpus))
    assert np.all(decoded[:, 1] == 0.0)
    assert np.all(np.abs(decoded - corpus) <= (corpus.max(0) - corpus.min(0)) / 255 / 2 + 1e-6)


def test_binary_hamming_matches_brute_force_at_odd_dim():
    corpus, queries = unit_rows(200, 20, seed=2), unit_rows(5, 20, seed=3)
    codec = create_codec("binary").fit(corpus)
    scores, rows = codec.search(queries, codec.encode(corpus), 200)
    bits_q = queries > np.median(corpus, axis=0)
    bits_d = corpus > np.median(corpus, axis=0)
    agreement = 20 - 2 * (bits_q[:, None, :] != bits_d[None, :, :]).sum(-1)
    assert np.array_equal(scores, np.take_along_axis(agreement, rows, axis=1).astype(np.float32))
    assert np.all(np.diff(scores, axis=1) <= 0) and all(len(set(r)) == 200 for r in rows)


def test_binary_rescore_ranks_candidates_by_float_score():
    corpus, queries = unit_rows(400, 64, seed=4), unit_rows(6, 64, seed=5)
    plain = create_codec("binary").fit(corpus)
    rescored = create_codec("binary", rescore=50).fit(corpus)
    codes = rescored.encode(corpus)
    assert np.array_equal(codes, plain.encode(corpus))  # "bits" rescoring stores nothing extra
    _, candidates = plain.search(queries, codes, 50)
    scores, rows = rescored.search(queries, codes, 10)
    decoded = rescored.decode(codes)
    for query, cands, got_rows, got_scores in zip(queries, candidates, rows, scores):
        expected = decoded[cands] @ query
        assert set(got_rows) <= set(cands)
        np.testing.assert_allclose(got_scores, np.sort(expected)[::-1][:10], rtol=1e-5, atol=1e-6)


def test_pq_is_deterministic_and_search_is_adc():
    corpus, queries = unit_rows(600, 32, seed=6), unit_rows(4, 32, seed=7)
    first = create_codec("pq", m=8, nbits=5, niter=5).fit(corpus)
    second = create_codec("pq", m=8, nbits=5, niter=5).fit(corpus)
    assert np.array_equal(first.centroids, second.centroids)
    codes = first.encode(corpus)
    scores, rows = first.search(queries, codes, 10)
    expected_scores, expected_rows = exact_search(queries, first.decode(codes), 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-5)
    assert (rows == expected_rows).mean() > 0.95  # only near-ties may swap


def test_blocked_search_equals_one_block():
    corpus, queries = unit_rows(1000, 16, seed=8), unit_rows(7, 16, seed=9)
    for k in (25, 200):  # 200 > the last block's 104 rows
        whole = exact_search(queries, corpus, k)
        blocked = blocked_search(queries, len(corpus), lambda start, stop: corpus[start:stop], k, block=128)
        np.testing.assert_allclose(blocked[0], whole[0], rtol=1e-6)
        assert np.array_equal(blocked[1], whole[1])


@pytest.mark.parametrize("name", sorted(CODECS))
def test_save_load_round_trip(name, tmp_path):
    corpus, queries = unit_rows(400, 64, seed=10), unit_rows(9, 64, seed=11)
    settings = dict(FAST[name], **({"rescore_with": "int8"} if name == "binary" else {}))
    codec = create_codec(name, **settings).fit(corpus)
    codes = codec.encode(corpus)
    codec.save(tmp_path / "codec")
    record = json.loads((tmp_path / "codec" / "config.json").read_text())
    assert record["codec"] == name and record["dim"] == 64 and record["format"] == "dive-codec/1"
    assert not list((tmp_path / "codec").glob("*.pkl")) and not list((tmp_path / "codec").glob(".*.tmp"))
    for loaded in (load_codec(tmp_path / "codec"), type(codec).load(tmp_path / "codec")):
        assert type(loaded) is type(codec) and loaded.config == codec.config
        assert np.array_equal(loaded.encode(corpus), codes)
        assert loaded.bytes_per_vector == codec.bytes_per_vector
        for got, want in zip(loaded.search(queries, codes, 10), codec.search(queries, codes, 10)):
            assert np.array_equal(got, want)
    other = "int8" if name != "int8" else "float16"
    with pytest.raises(DiveError, match=f"holds a '{name}' codec"):
        CODECS[other].load(tmp_path / "codec")
    state = tmp_path / "codec" / "state.safetensors"
    state.write_bytes(state.read_bytes() + b" ")
    with pytest.raises(DiveError, match="checksum"):
        load_codec(tmp_path / "codec")
    with pytest.raises(DiveError, match="no config.json"):
        load_codec(tmp_path / "missing")


# ----- behaviour on real embeddings (scifact, all-MiniLM-L6-v2, 384-d) -------------------------

@pytest.mark.real_data
def test_lossless_round_trip_on_real_embeddings(scifact_test):
    vectors = scifact_test[0].doc_vectors
    codec = create_codec("lossless").fit(vectors)
    codes = codec.encode(vectors)
    assert np.array_equal(codec.decode(codes).view(np.uint32), vectors.view(np.uint32))
    assert codec.bytes_per_vector == pytest.approx(codes.nbytes / len(vectors))
    print(f"\nlossless on scifact corpus ({vectors.shape}): {codec.bytes_per_vector:.1f} bytes/vector, "
          f"ratio {codec.ratio:.3f}x")
    assert 1.1 < codec.ratio < 1.6


@pytest.mark.real_data
def test_float16_decodes_within_1e_3(scifact_test):
    vectors = scifact_test[0].doc_vectors
    codec = create_codec("float16").fit(vectors)
    assert np.abs(codec.decode(codec.encode(vectors)) - vectors).max() < 1e-3


@pytest.mark.real_data
def test_int8_keeps_99_percent_of_frozen_ndcg(scifact_test, frozen_ndcg):
    embeddings, eval_set = scifact_test
    codec = create_codec("int8").fit(embeddings.doc_vectors)
    ndcg = evaluate_codec(codec, eval_set)["ndcg@10"]
    print(f"\nint8: nDCG@10 {ndcg:.4f} vs frozen {frozen_ndcg:.4f} at {codec.bytes_per_vector} bytes/vector")
    assert ndcg >= 0.99 * frozen_ndcg


@pytest.mark.real_data
def test_binary_rescoring_beats_hamming(scifact_test, frozen_ndcg):
    embeddings, eval_set = scifact_test
    plain = create_codec("binary").fit(embeddings.doc_vectors)
    codes = plain.encode(embeddings.doc_vectors)
    hamming = evaluate_codec(plain, eval_set, codes=codes)["ndcg@10"]
    rescored = create_codec("binary", rescore=100).fit(embeddings.doc_vectors)
    with_bits = evaluate_codec(rescored, eval_set, codes=codes)["ndcg@10"]
    print(f"\nbinary nDCG@10: Hamming {hamming:.4f}, rescored top-100 {with_bits:.4f}, frozen {frozen_ndcg:.4f}")
    assert hamming < with_bits <= frozen_ndcg + 0.01
    assert hamming > 0.7 * frozen_ndcg  # median-centred bits keep most of the ranking


@pytest.mark.real_data
def test_retrieve_codes_checks_ids_and_drops_identical_ids(scifact_test):
    embeddings, eval_set = scifact_test
    codec = create_codec("float16").fit(embeddings.doc_vectors[:500])
    codes = codec.encode(embeddings.doc_vectors[:500])
    with pytest.raises(DiveError, match="500 stored vectors but 499"):
        retrieve_codes(codec, codes, eval_set.query_vectors[:2], ["a", "b"], embeddings.doc_ids[:499], 10)
    doc_ids = list(embeddings.doc_ids[:500])
    doc_ids[0] = "q0"  # a document whose id equals the query's is removed from its ranking
    run = retrieve_codes(codec, codes, embeddings.doc_vectors[:1], ["q0"], doc_ids, 10)
    assert "q0" not in run["q0"] and len(run["q0"]) == 10


# ----- searchers: every codec's stored codes as a dive.search.Searcher ---------------------------

def synthetic_eval_set(n_docs: int = 400, n_queries: int = 30, dim: int = 32) -> EvalSet:
    """Query i lies near doc i and is relevant to it and to doc i + 1; doc 0 carries query 0's id."""
    docs = unit_rows(n_docs, dim, seed=12)
    queries = docs[:n_queries] + 0.3 * unit_rows(n_queries, dim, seed=13)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    doc_ids = ["q0"] + [f"d{i}" for i in range(1, n_docs)]
    qrels = {f"q{i}": {doc_ids[i]: 1, doc_ids[i + 1]: 2} for i in range(n_queries)}
    return EvalSet([f"q{i}" for i in range(n_queries)], queries, qrels, doc_ids, docs)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_codec_searcher_is_a_searcher_that_ranks_like_codec_search(name):
    eval_set = synthetic_eval_set()
    codec = create_codec(name, **FAST[name]).fit(eval_set.doc_vectors)
    codes = codec.encode(eval_set.doc_vectors)
    searcher = codec.searcher(codes)
    assert isinstance(searcher, Searcher) and len(searcher) == len(eval_set.doc_ids)
    for got, want in zip(searcher.search(eval_set.query_vectors, 10), codec.search(eval_set.query_vectors, codes, 10)):
        assert np.array_equal(got, want)
    ks = (1, 10, 100)
    scores, rows = codec.search(eval_set.query_vectors, codes, max(ks) + 1)  # the ranking scored before searchers
    run = rankings_to_run(eval_set.query_ids, eval_set.doc_ids, scores, rows, max(ks))
    by_hand = score_run(run, eval_set.qrels, ks)
    assert evaluate_searcher(searcher, eval_set.query_vectors, eval_set, ks) == by_hand
    assert evaluate_codec(codec, eval_set, ks, codes=codes) == by_hand
    with pytest.raises(DiveError, match="fit"):
        create_codec(name, **FAST[name]).searcher(codes)


@pytest.mark.parametrize("name", ["float16", "int8", "pq", "binary"])
def test_faiss_searcher_is_a_searcher_that_ranks_like_codec_search(name):
    eval_set = synthetic_eval_set()
    settings = {key: value for key, value in FAST[name].items() if key != "rescore"}  # no rescoring in faiss
    codec = create_codec(name, **settings).fit(eval_set.doc_vectors)
    codes = codec.encode(eval_set.doc_vectors)
    searcher = codec.faiss_searcher(codec.faiss_index(codes))
    assert isinstance(searcher, Searcher)
    scores, rows = searcher.search(eval_set.query_vectors, 10)
    expected_scores, expected_rows = codec.search(eval_set.query_vectors, codes, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
    assert (rows == expected_rows).mean() > 0.95  # only near-ties may swap


def test_the_codec_base_class_points_to_load_codec(tmp_path):
    create_codec("int8").fit(unit_rows(50, 8)).save(tmp_path / "codec")
    with pytest.raises(DiveError, match="load_codec"):
        Codec.load(tmp_path / "codec")
    assert isinstance(load_codec(tmp_path / "codec"), CODECS["int8"])


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(CODECS))
def test_evaluate_searcher_equals_the_codec_ranking_scored_directly_on_real_embeddings(scifact_test, name):
    embeddings, eval_set = scifact_test
    settings = {"pq": {"m": 16}, "binary": {"rescore": 100}}.get(name, {})
    codec = create_codec(name, **settings).fit(embeddings.doc_vectors)
    codes = codec.encode(embeddings.doc_vectors)
    scores, rows = codec.search(eval_set.query_vectors, codes, 11)
    by_hand = score_run(rankings_to_run(eval_set.query_ids, eval_set.doc_ids, scores, rows, 10), eval_set.qrels)
    assert evaluate_searcher(codec.searcher(codes), eval_set.query_vectors, eval_set) == by_hand
    assert evaluate_codec(codec, eval_set, codes=codes) == by_hand


# ----- settings that match the deployed systems (issue 23, item 5) -------------------------------

def st_quantize_embeddings():
    """sentence-transformers' quantize_embeddings, wherever this version keeps it."""
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.quantization import quantize_embeddings
    return quantize_embeddings


def st_floors_and_clips() -> bool:
    """Whether the installed sentence-transformers floors and clips int8 codes (6.x; 3.x truncates int8 codes
    toward zero after subtracting 128, and casts out-of-range values without clipping)."""
    import sentence_transformers

    return int(sentence_transformers.__version__.split(".")[0]) >= 6


def test_binary_zero_threshold_gives_sentence_transformers_ubinary_codes():
    quantize_embeddings = st_quantize_embeddings()
    corpus, queries = unit_rows(300, 44, seed=20), unit_rows(7, 44, seed=21)  # 44 bits: padding in the last byte
    zero = create_codec("binary", threshold="zero").fit(corpus)
    assert np.array_equal(zero.encode(corpus), np.packbits(corpus > 0, axis=1))
    assert np.array_equal(zero.bits(queries), np.packbits(queries > 0, axis=1))
    whole_bytes = unit_rows(300, 48, seed=20)  # sentence-transformers 3.x packs only whole bytes per row correctly
    codec = create_codec("binary", threshold="zero").fit(whole_bytes)
    assert np.array_equal(codec.encode(whole_bytes), quantize_embeddings(whole_bytes, precision="ubinary"))
    median = create_codec("binary").fit(corpus)  # the default stays the corpus median
    assert not np.array_equal(median.encode(corpus), zero.encode(corpus))
    assert np.array_equal(median.encode(corpus), np.packbits(corpus > np.median(corpus, axis=0), axis=1))


def test_binary_codec_saved_before_threshold_existed_loads_as_median(tmp_path):
    corpus = unit_rows(200, 16, seed=22)
    codec = create_codec("binary").fit(corpus)
    codec.save(tmp_path / "codec")
    record = json.loads((tmp_path / "codec" / "config.json").read_text())
    assert record["config"]["threshold"] == "median"
    del record["config"]["threshold"], record["config"]["oversampling"]
    assert create_codec("binary", **record["config"]).config.threshold == "median"


def test_oversampling_fetches_a_multiple_of_k_and_the_absolute_count_stays():
    corpus, queries = unit_rows(400, 64, seed=23), unit_rows(5, 64, seed=24)
    plain = create_codec("binary").fit(corpus)
    codes = plain.encode(corpus)
    oversampled = create_codec("binary", oversampling=2.5).fit(corpus)
    absolute = create_codec("binary", rescore=25).fit(corpus)
    assert oversampled.n_candidates(10, 400) == 25 and oversampled.n_candidates(100, 400) == 250
    assert absolute.n_candidates(10, 400) == 25 and absolute.n_candidates(100, 400) == 100
    assert oversampled.n_candidates(1000, 400) == 400
    # At k=10 both rescore the same 25 Hamming candidates, so they rank identically.
    for got, expected in zip(oversampled.search(queries, codes, 10), absolute.search(queries, codes, 10)):
        assert np.array_equal(got, expected)
    _, candidates = plain.search(queries, codes, 25)
    _, rows = oversampled.search(queries, codes, 10)
    assert all(set(r) <= set(c) for r, c in zip(rows, candidates))
    with pytest.raises(DiveError, match="not both"):
        create_codec("binary", rescore=10, oversampling=2.0)
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(DiveError, match="oversampling"):
            create_codec("binary", oversampling=bad)
    with pytest.raises(DiveError, match="threshold"):
        create_codec("binary", threshold="mean")
    with pytest.raises(DiveError, match="rescoring is not part of a faiss index"):
        oversampled.faiss_index(codes)


def test_int8_floor_rounding_equals_sentence_transformers_with_the_codec_ranges():
    quantize_embeddings = st_quantize_embeddings()
    from dive.quantize.int8 import Int8, as_signed

    corpus, queries = unit_rows(500, 48, seed=25), unit_rows(40, 48, seed=26) * 1.3  # some queries out of range
    codec = create_codec("int8", rounding="floor").fit(corpus)
    assert codec.ranges.shape == (2, 48) and codec.ranges.dtype == np.float32
    # Inside the calibrated range every version from 3.0 floors its uint8 codes (3.x by a cast).
    assert np.array_equal(codec.encode(corpus), quantize_embeddings(corpus, "uint8", ranges=codec.ranges))
    if st_floors_and_clips():  # 6.x: clip(floor(...)) for uint8 and int8, out-of-range values included
        for vectors in (corpus, queries):
            assert np.array_equal(codec.encode(vectors), quantize_embeddings(vectors, "uint8", ranges=codec.ranges))
            assert np.array_equal(as_signed(codec.encode(vectors)),
                                  quantize_embeddings(vectors, "int8", ranges=codec.ranges))
        # sentence-transformers' own calibration on the corpus gives the same ranges.
        assert np.array_equal(as_signed(codec.encode(corpus)),
                              quantize_embeddings(corpus, "int8", calibration_embeddings=corpus))
    rebuilt = Int8.from_ranges(codec.ranges, rounding="floor")
    assert np.array_equal(rebuilt.encode(queries), codec.encode(queries))
    # floor codes decode to the middle of their step, which is what faiss' QT_8bit index decodes.
    codes = codec.encode(corpus)
    assert np.abs(codec.decode(codes) - corpus).max() <= codec.step.max() * 0.5 + 1e-6
    np.testing.assert_allclose(codec.faiss_index(codes).sa_decode(codes), codec.decode(codes), atol=1e-6)
    for bad in (np.zeros((3, 4)), np.array([[1.0, 0.0], [0.0, 1.0]]), np.full((2, 3), np.nan)):
        with pytest.raises(DiveError, match="ranges"):
            Int8.from_ranges(bad)
    with pytest.raises(DiveError, match="rounding"):
        create_codec("int8", rounding="up")


def test_int8_default_rounding_is_unchanged_nearest():
    corpus = unit_rows(300, 16, seed=27)
    codec = create_codec("int8").fit(corpus)
    step = (corpus.max(axis=0) - corpus.min(axis=0)) / 255
    assert np.array_equal(codec.encode(corpus), np.clip(np.rint((corpus - corpus.min(axis=0)) / step), 0, 255))
    np.testing.assert_allclose(codec.decode(codec.encode(corpus)), corpus, atol=float(step.max()) / 2 + 1e-6)


def test_every_codec_setting_names_its_database_equivalent():
    from dive.quantize.systems import equivalent

    assert "IndexFlatIP" in equivalent(None)
    assert "halfvec" in equivalent({"name": "float16", "config": {}})
    assert "Qdrant `oversampling: 4`" in equivalent({"name": "binary", "config": {"threshold": "zero",
                                                                                   "oversampling": 4.0}})
    assert "threshold=zero" in equivalent({"name": "binary", "config": {"rescore": 100}})  # old record: median
    assert "ranges=codec.ranges" in equivalent({"name": "int8", "config": {"rounding": "floor"}})
    assert "rounding=floor" in equivalent({"name": "int8", "config": {}})
    assert "IndexPQ" in equivalent({"name": "pq", "config": {"m": 16}})
