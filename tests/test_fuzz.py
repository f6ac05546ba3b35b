"""Property tests: loaders and codecs either work or fail with a DiveError, never anything else."""

import json
import string

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
