import zipfile

import pytest

from dive.data import BEIR_SPLITS, load_beir, resolve_dataset
from dive.data.download import BEIR_BASE_URL, download_beir
from dive.errors import DiveError
from helpers import write_beir


def zip_dataset(tmp_path, name):
    source = write_beir(tmp_path / "src" / name)
    archive = tmp_path / "server" / f"{name}.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in source.rglob("*"):
            bundle.write(file, file.relative_to(source.parent))
    return archive.parent


def test_known_beir_datasets_and_official_url():
    assert BEIR_SPLITS["scifact"] == ("train", "test")
    assert BEIR_SPLITS["arguana"] == ("test",)
    assert {"nfcorpus", "fiqa", "arguana", "scidocs", "quora", "trec-covid"} <= set(BEIR_SPLITS)
    assert BEIR_BASE_URL.startswith("https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets")


def test_missing_beir_dataset_is_downloaded_from_the_archive(tmp_path, monkeypatch):
    server = zip_dataset(tmp_path, "scifact")
    monkeypatch.setenv("DIVE_BEIR_URL", server.as_uri())
    monkeypatch.setenv("DIVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIVE_DATA_DIR", raising=False)
    folder = resolve_dataset("scifact")
    assert folder == tmp_path / "cache" / "datasets" / "scifact"
    assert len(load_beir(folder).doc_ids) == 30
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no scratch left behind
    assert resolve_dataset("scifact") == folder  # second call finds it, no download


def test_data_dir_and_env_take_precedence(tmp_path, monkeypatch):
    write_beir(tmp_path / "mine" / "toy")
    write_beir(tmp_path / "env" / "toy")
    monkeypatch.setenv("DIVE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_dataset("toy", tmp_path / "mine") == tmp_path / "mine" / "toy"
    assert resolve_dataset("toy") == tmp_path / "env" / "toy"
    assert resolve_dataset(str(tmp_path / "mine" / "toy")) == tmp_path / "mine" / "toy"


def test_unknown_dataset_and_bad_archives_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIVE_DATA_DIR", raising=False)
    with pytest.raises(DiveError, match="not one of BEIR's public datasets"):
        resolve_dataset("my-private-set")
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "fiqa.zip").write_bytes(b"not a zip")
    with pytest.raises(DiveError, match="not a zip archive"):
        download_beir("fiqa", tmp_path / "out", base_url=(tmp_path / "server").as_uri())
    with pytest.raises(DiveError, match="download failed"):
        download_beir("nfcorpus", tmp_path / "out", base_url=(tmp_path / "nowhere").as_uri())
    assert not (tmp_path / "out" / "fiqa").exists()
    evil = tmp_path / "server" / "quora.zip"
    with zipfile.ZipFile(evil, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    with pytest.raises(DiveError, match="escapes the target folder"):
        download_beir("quora", tmp_path / "out", base_url=(tmp_path / "server").as_uri())
    assert not (tmp_path / "escape.txt").exists()
