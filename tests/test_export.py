import numpy as np
import pytest

from dive.data import MiningConfig, TrainSet, build_sampler
from dive.encode import default_model_path, encode_texts
from dive.errors import DiveError
from dive.export import ONNX_TOLERANCE, export_onnx, export_sentence_transformers
from dive.methods import create_method
from dive.pipeline import Pipeline
from helpers import random_unit

TEXTS = ["Vitamin D deficiency raises fracture risk.", "Aspirin reduces the risk of heart attack.",
         "Sleep loss impairs memory consolidation."]


def train_set_384():
    docs, queries = random_unit(300, 384, 0), random_unit(60, 384, 1)
    ids = [f"d{i}" for i in range(300)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(60)}
    sampler = build_sampler([f"q{i}" for i in range(60)], queries, ids, docs, qrels, MiningConfig(hard_top_k=10))
    return TrainSet(queries, docs, sampler)


def fitted(name):
    settings = {"dim": 16}
    if name in ("dive", "matryoshka-adaptor", "search-adaptor", "smec", "autoencoder"):
        settings["train"] = {"epochs": 2, "batch_size": 32, "progress": False}
    if name in ("dive", "matryoshka-adaptor", "autoencoder"):
        settings["hidden"] = 64
    return create_method(name, **settings).fit(train_set_384())


ALL_METHODS = ["dive", "pca", "truncate", "autoencoder", "frozen", "matryoshka-adaptor", "search-adaptor", "smec"]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_onnx_export_matches_the_pipeline_on_real_embeddings(tmp_path, frozen_texts, name):
    import onnxruntime

    pipeline = Pipeline(fitted(name))
    summary = export_onnx(pipeline, tmp_path / "adapter.onnx")
    assert summary["max_abs_difference"] <= ONNX_TOLERANCE
    session = onnxruntime.InferenceSession(str(tmp_path / "adapter.onnx"), providers=["CPUExecutionProvider"])
    for batch in (frozen_texts, frozen_texts[:1]):  # any batch size
        (onnx_output,) = session.run(["compressed"], {"embeddings": batch})
        assert onnx_output.shape == (len(batch), pipeline.method.output_dim)
        np.testing.assert_allclose(onnx_output, pipeline.transform(batch), atol=ONNX_TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def frozen_texts():
    return encode_texts(TEXTS)


@pytest.mark.parametrize("name", ["dive", "pca", "truncate", "autoencoder", "frozen"])
def test_exported_model_needs_no_custom_code_and_encodes_to_the_compressed_vectors(tmp_path, frozen_texts, name):
    from sentence_transformers import SentenceTransformer

    pipeline = Pipeline(fitted(name))
    folder = export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported")
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)  # no trust_remote_code
    exported = model.encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(exported, pipeline.transform(frozen_texts), atol=1e-5)


def test_residual_adapters_export_as_a_dive_module(tmp_path, frozen_texts):
    from sentence_transformers import SentenceTransformer

    pipeline = Pipeline(fitted("matryoshka-adaptor"))
    folder = export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported")
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=True)
    np.testing.assert_allclose(model.encode(TEXTS, convert_to_numpy=True), pipeline.transform(frozen_texts),
                               atol=1e-5)
    with pytest.raises(DiveError, match="already exists"):
        export_sentence_transformers(pipeline, default_model_path(), folder)


def test_cli_export_writes_a_loadable_folder(tmp_path, capsys, frozen_texts):
    from sentence_transformers import SentenceTransformer

    from dive.cli import main

    pipeline = Pipeline(fitted("pca"))
    pipeline.save(tmp_path / "pipeline")
    assert main(["export", "--pipeline", str(tmp_path / "pipeline"), "--out", str(tmp_path / "st")]) == 0
    assert "SentenceTransformer(" in capsys.readouterr().out
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu", local_files_only=True)
    assert model.encode(TEXTS, convert_to_numpy=True).shape == (3, 16)


def test_cli_onnx_export_reports_the_check(tmp_path, capsys):
    import json

    from dive.cli import main

    Pipeline(fitted("dive")).save(tmp_path / "pipeline")
    out = tmp_path / "dive16.onnx"
    assert main(["export", "--pipeline", str(tmp_path / "pipeline"), "--format", "onnx", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dim"] == 16 and summary["max_abs_difference"] <= ONNX_TOLERANCE and out.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temp file left


def test_onnx_export_that_fails_its_check_leaves_no_file(tmp_path, monkeypatch):
    import dive.export

    monkeypatch.setattr(dive.export, "ONNX_TOLERANCE", -1.0)  # no graph can pass
    with pytest.raises(DiveError, match="ONNX output differs from torch"):
        export_onnx(Pipeline(fitted("pca")), tmp_path / "pca.onnx")
    assert list(tmp_path.iterdir()) == []
