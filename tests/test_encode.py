import numpy as np
import pytest

from dive.encode import EncodeConfig, encode_texts
from dive.errors import DiveError


def test_ray_engine_encodes_the_same_vectors_as_one_process(local_ray, scifact):
    dataset, embeddings = scifact
    texts = dataset.doc_texts[:300]
    on_ray = encode_texts(texts, EncodeConfig(engine="ray", ray_workers=1))
    assert on_ray.shape == (300, 384)
    # Same model and texts; only the padding of each batch can differ, so agreement is to float error.
    np.testing.assert_allclose(on_ray, embeddings.doc_vectors[:300], atol=1e-5)


def test_unknown_engine_and_too_many_workers_fail_clearly(local_ray):
    with pytest.raises(DiveError, match="unknown encode engine 'spark'"):
        EncodeConfig(engine="spark")
    with pytest.raises(DiveError, match="2 Ray workers leave none of the cluster's 2 CPUs"):
        encode_texts(["a text"], EncodeConfig(engine="ray", ray_workers=2))


def test_progress_bar_shows_by_default_and_no_progress_hides_it(capfd):
    encode_texts(["a text"], EncodeConfig(use_cache=False))
    assert "Batches" in capfd.readouterr().err
    encode_texts(["a text"], EncodeConfig(use_cache=False, progress=False))
    assert "Batches" not in capfd.readouterr().err
