import numpy as np
import pytest

from dive.data import MiningConfig, TrainSet, build_sampler
from dive.encode import default_model_path, encode_texts
from dive.errors import DiveError
from dive.export import ONNX_TOLERANCE, ExportConfig, export_onnx, export_sentence_transformers
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


# ----- a folder that loads everywhere, with its codec and its card (issue 23, item 3) ----------------

def base_identity():
    from dive.encode import model_digest
    from dive.identity import ModelIdentity

    path = default_model_path()
    return ModelIdentity(path.name, model_digest(path))


EVALUATION = {"dataset": "toy", "protocol": "heldout", "protocol_label": "held out", "seed": 0,
              "n_test_queries": 60, "metrics": {"ndcg@10": 0.6123, "recall@10": 0.7345},
              "frozen_metrics": {"ndcg@10": 0.5012, "recall@10": 0.6543}}


def pipeline_with(codec_name=None, method="pca", **codec_settings):
    from dive.quantize import create_codec

    method = fitted(method)
    codec = None
    if codec_name:
        codec = create_codec(codec_name, **codec_settings).fit(method.transform(random_unit(300, 384, 0)))
    return Pipeline(method, codec, base_identity(), dict(EVALUATION))


def load_exported(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=True)


@pytest.mark.parametrize("codec_name, settings", [("int8", {"rounding": "floor"}), ("binary", {"threshold": "zero"}),
                                                  ("int8", {})])
def test_exported_codec_module_makes_encode_return_the_stored_codes(tmp_path, frozen_texts, codec_name, settings):
    pipeline = pipeline_with(codec_name, **settings)
    model = load_exported(export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported"))
    codes = model.encode(TEXTS, convert_to_numpy=True)
    assert codes.dtype == np.uint8 and np.array_equal(codes, pipeline.encode(frozen_texts))
    assert model.get_sentence_embedding_dimension() == pipeline.codec.code_width
    floats = np.stack(model.encode(TEXTS, output_value="float_embedding"))
    np.testing.assert_allclose(floats, pipeline.transform(frozen_texts), atol=1e-5)


def test_model_card_is_written_from_the_pipelines_recorded_facts(tmp_path):
    pipeline = pipeline_with("binary", threshold="zero", oversampling=4.0)
    folder = export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported")
    card = (folder / "README.md").read_text()
    assert card != (default_model_path() / "README.md").read_text()
    for fact in (pipeline.base_model.sha256, "`pca`", "16 dims", "`binary`", '"threshold": "zero"',
                 f"| bytes per vector | {pipeline.bytes_per_vector:g} |", "0.6123", "0.7345", "0.5012",
                 "protocol held out", "60 test queries", "dataset `toy`", "trust_remote_code=True"):
        assert fact in card, fact
    pipeline.evaluation = {**EVALUATION, "metrics": {"ndcg@10": 0.4321, "recall@10": 0.5}}
    pipeline.base_model = None
    again = export_sentence_transformers(pipeline, default_model_path(), tmp_path / "again")
    card = (again / "README.md").read_text()
    assert "0.4321" in card and "0.6123" not in card and "not recorded" in card
    pipeline.evaluation = None
    card = (export_sentence_transformers(pipeline, default_model_path(), tmp_path / "bare") / "README.md").read_text()
    assert "Metrics: not recorded" in card


def test_exported_modules_name_types_every_supported_version_resolves(tmp_path):
    import json

    folder = export_sentence_transformers(pipeline_with("int8"), default_model_path(), tmp_path / "exported")
    types = [module["type"] for module in json.loads((folder / "modules.json").read_text())[3:]]
    assert types == ["sentence_transformers.models.Dense", "sentence_transformers.models.Normalize",
                     "dive.export.DiveCodec"]


def test_truncate_dim_exports_the_renormalised_prefix(tmp_path, frozen_texts):
    pipeline = pipeline_with(None, method="matryoshka-adaptor")
    model = load_exported(export_sentence_transformers(pipeline, default_model_path(), tmp_path / "t8",
                                                       ExportConfig(truncate_dim=8)))
    prefix = pipeline.transform(frozen_texts)[:, :8]
    np.testing.assert_allclose(model.encode(TEXTS, convert_to_numpy=True),
                               prefix / np.linalg.norm(prefix, axis=1, keepdims=True), atol=1e-5)
    assert model.get_sentence_embedding_dimension() == 8
    assert "truncated to the first 8" in (tmp_path / "t8" / "README.md").read_text()
    with_codec = pipeline_with("int8")
    for pipeline, config, message in ((with_codec, ExportConfig(truncate_dim=8), "fitted on 16 dims"),
                                      (with_codec, ExportConfig(truncate_dim=16), "from 1 to 15"),
                                      (pipeline_with("lossless"), ExportConfig(), "lossless")):
        with pytest.raises(DiveError, match=message):
            export_sentence_transformers(pipeline, default_model_path(), tmp_path / "refused", config)
        assert not (tmp_path / "refused").exists()
    folder = export_sentence_transformers(with_codec, default_model_path(), tmp_path / "float",
                                          ExportConfig(truncate_dim=8, codec=False))
    assert load_exported(folder).encode(TEXTS, convert_to_numpy=True).dtype == np.float32


def test_export_refuses_a_model_folder_that_is_not_the_base_model(tmp_path):
    from dive.identity import ModelIdentity

    pipeline = pipeline_with(None)
    pipeline.base_model = ModelIdentity("all-mpnet-base-v2", "c" * 64)
    with pytest.raises(DiveError, match="fitted on: all-mpnet-base-v2 .*; --model .*: model ") as refused:
        export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported")
    assert "\n" not in str(refused.value) and not (tmp_path / "exported").exists()


def test_the_pipelines_prompts_become_the_exported_models_prompts(tmp_path):
    import json
    from dataclasses import replace

    pipeline = pipeline_with(None)
    pipeline.base_model = replace(pipeline.base_model, query_prompt="query: ", doc_prompt="passage: ")
    folder = export_sentence_transformers(pipeline, default_model_path(), tmp_path / "exported")
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: " and prompts["document"] == "passage: "
    model = load_exported(folder)
    np.testing.assert_allclose(model.encode(["x"], prompt_name="query", convert_to_numpy=True),
                               model.encode(["query: x"], convert_to_numpy=True), atol=1e-6)
    assert 'prompt_name="query"' in (folder / "README.md").read_text()


OLD_PYTHON = "DIVE_OLD_ST_PYTHON"
"""A python with the oldest sentence-transformers pyproject.toml allows (and dive's other dependencies)."""


def test_folders_exported_here_load_in_the_oldest_supported_sentence_transformers(tmp_path, frozen_texts):
    """Runs only where $DIVE_OLD_ST_PYTHON names such an interpreter (see README: tested versions)."""
    import os
    import subprocess
    from pathlib import Path

    python = os.environ.get(OLD_PYTHON)
    if not python:
        pytest.skip(f"set {OLD_PYTHON} to a python with sentence-transformers 3.0.x to run it")
    expected = {}
    for name, pipeline in (("plain", pipeline_with(None)), ("int8", pipeline_with("int8", rounding="floor")),
                           ("binary", pipeline_with("binary", threshold="zero"))):
        export_sentence_transformers(pipeline, default_model_path(), tmp_path / name)
        expected[name] = pipeline.encode(frozen_texts)
        np.save(tmp_path / f"{name}.npy", expected[name])
    script = ("import sys, numpy as np, sentence_transformers as st\n"
              "from sentence_transformers import SentenceTransformer\n"
              f"texts = {TEXTS!r}\n"
              "for name in ('plain', 'int8', 'binary'):\n"
              "    model = SentenceTransformer(sys.argv[1] + '/' + name, device='cpu', trust_remote_code=True)\n"
              "    np.save(sys.argv[1] + '/' + name + '.old.npy', model.encode(texts, convert_to_numpy=True))\n"
              "print(st.__version__)\n")
    done = subprocess.run([python, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("3.")
    for name, codes in expected.items():
        old = np.load(tmp_path / f"{name}.old.npy")
        if codes.dtype == np.float32:
            np.testing.assert_allclose(old, codes, atol=1e-5)
        else:
            assert np.array_equal(old, codes)
