"""Property tests: loaders and codecs either work or fail with a DiveError, never anything else."""

import json
import string
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dive.data import check_vectors, load_beir
from dive.errors import DiveError
from dive.quantize import create_codec
from helpers import write_beir

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=6)
lines = st.one_of(st.text(alphabet=string.printable, max_size=40), json_values.map(json.dumps),
                  st.fixed_dictionaries({"_id": st.text(max_size=3), "text": st.text(max_size=5)}).map(json.dumps))


@FAST
@given(corpus=st.lists(lines, max_size=6), queries=st.lists(lines, max_size=6),
       qrels=st.lists(st.lists(st.text(alphabet=string.ascii_letters + "0123456789-. ", max_size=6), max_size=4)
                      .map("\t".join), max_size=5))
def test_any_beir_folder_loads_or_raises_a_dive_error(tmp_path_factory, corpus, queries, qrels):
    folder = write_beir(tmp_path_factory.mktemp("fuzz") / "set")
    (folder / "corpus.jsonl").write_text("\n".join(corpus))
    (folder / "queries.jsonl").write_text("\n".join(queries))
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels))
    try:
        dataset = load_beir(folder)
    except DiveError as error:
        assert "\n" not in str(error)
        return
    assert len(dataset.doc_ids) == len(set(dataset.doc_ids)) > 0
    for split in dataset.qrels.values():
        for query_id, docs in split.items():
            assert query_id in dataset.query_ids and set(docs) <= set(dataset.doc_ids)


@FAST
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 5)),
              elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_check_vectors_accepts_only_finite_nonzero_rows(vectors):
    try:
        checked = check_vectors(vectors, "v")
    except DiveError:
        assert not np.isfinite(vectors).all() or (~vectors.any(axis=1)).any()
        return
    assert np.isfinite(checked).all() and checked.any(axis=1).all()


finite_unit_rows = arrays(np.float32, st.tuples(st.integers(8, 40), st.just(16)),
                          elements=st.floats(-1, 1, width=32)).filter(lambda a: a.any(axis=1).all())


@FAST
@given(finite_unit_rows)
def test_lossless_round_trip_is_bit_exact_for_any_float32(vectors):
    codec = create_codec("lossless").fit(vectors)
    decoded = codec.decode(codec.encode(vectors))
    assert np.array_equal(decoded.view(np.uint32), vectors.view(np.uint32))


@FAST
@given(finite_unit_rows)
def test_int8_and_float16_decode_close_to_the_input(vectors):
    for name, tolerance in (("float16", 1e-3), ("int8", None)):
        codec = create_codec(name).fit(vectors)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no division by an underflowed step, no NaN cast to codes
            decoded = codec.decode(codec.encode(vectors))
        assert decoded.shape == vectors.shape
        span = vectors.max(axis=0) - vectors.min(axis=0)
        bound = tolerance if tolerance else span / 255 + 1e-6
        assert (np.abs(decoded - vectors) <= bound + 1e-6).all()


@FAST
@given(finite_unit_rows)
def test_binary_codes_pack_one_bit_per_dimension(vectors):
    codec = create_codec("binary").fit(vectors)
    codes = codec.encode(vectors)
    assert codes.shape == (len(vectors), 2) and codec.bytes_per_vector == 2


vector_values = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True), st.integers(-3, 3))


@FAST
@given(rows=st.lists(st.one_of(st.none(), st.lists(vector_values, max_size=5)), max_size=6))
def test_any_parquet_vector_column_reads_or_raises_a_dive_error(rows):
    import pyarrow as pa

    from dive.compress import table_vectors

    try:
        table = pa.table({"embedding": rows})
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return  # not even a column pyarrow can build
    try:
        vectors = check_vectors(table_vectors(table, "embedding", "fuzz"), "fuzz")
    except DiveError as error:
        assert "\n" not in str(error)
        return
    assert vectors.shape[0] == len(rows) and np.isfinite(vectors).all()


@FAST
@given(doc_ids=st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=1, max_size=6),
       n_rows=st.integers(0, 7), dim=st.integers(1, 4), query_dim=st.integers(1, 4),
       value=st.sampled_from([0.5, 0.0, np.nan, np.inf, -1.0]))
def test_any_vectors_folder_loads_or_raises_a_dive_error(tmp_path_factory, doc_ids, n_rows, dim, query_dim, value):
    from dive.encode import load_embeddings

    folder = tmp_path_factory.mktemp("vectors")
    corpus = np.random.default_rng(0).random((n_rows, dim)).astype(np.float32) + 0.1
    if n_rows:
        corpus[-1, 0] = value
    np.save(folder / "corpus.npy", corpus)
    (folder / "corpus_ids.txt").write_text("".join(f"{identifier}\n" for identifier in doc_ids))
    np.save(folder / "queries.npy", np.full((1, query_dim), 0.5, dtype=np.float32))
    (folder / "query_ids.txt").write_text("q\n")
    try:
        embeddings = load_embeddings(folder)
    except DiveError as error:
        assert "\n" not in str(error)
        return
    assert len(set(embeddings.doc_ids)) == len(embeddings.doc_ids) == len(embeddings.doc_vectors)
    np.testing.assert_allclose(np.linalg.norm(embeddings.doc_vectors, axis=1), 1.0, rtol=1e-5)


@FAST
@given(record=json_values)
def test_any_saved_method_config_loads_or_raises_a_dive_error(tmp_path_factory, record):
    from dive.data import TrainSet
    from dive.methods import create_method, load_method
    from dive.saved import CHECKSUM_KEY
    from dive.utils import sha256_file

    folder = tmp_path_factory.mktemp("method")
    create_method("pca", dim=2).fit(TrainSet.unsupervised(np.eye(4, dtype=np.float32) + 0.1)).save(folder)
    original = json.loads((folder / "config.json").read_text())
    mutated = {**original, "config": record} if isinstance(record, dict) else record
    if isinstance(mutated, dict):
        mutated[CHECKSUM_KEY] = sha256_file(folder / "weights.safetensors")
    (folder / "config.json").write_text(json.dumps(mutated))
    try:
        load_method(folder)
    except DiveError as error:
        assert "\n" not in str(error)
