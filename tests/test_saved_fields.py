"""Issue 20, defect 7 and the tampered-config cases of 10, as properties over every field of a saved
pipeline (the method's ``config.json`` and the folder's ``pipeline.json``).

* Any JSON value in any field (or the field removed, or the whole record replaced), with every
  checksum updated consistently: loading is refused with a one-line DiveError, or the pipeline
  loads and compresses exactly as the saved one did.
* The same edit to ``config.json`` without updating ``pipeline.json``: refused before any field is
  used, i.e. before any torch module is built (a huge ``hidden`` would otherwise allocate).

Values include sizes that would make torch allocate terabytes (``10**12``) or overflow
(``2**63``); loads run under an address-space limit a few GiB above the current size, so such a
value fails at once instead of swapping the shared machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cli_harness import memory_guard
from dive.errors import DiveError
from dive.methods import create_method
from dive.pipeline import Pipeline
from helpers import random_unit, toy_train_set

DELETE = "<delete the field>"
PROBE = random_unit(5, 16, seed=11)
PROPERTY = settings(max_examples=100, deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Saved(tuple):
    """(folder, expected output for PROBE), shown briefly in hypothesis reports."""

    def __repr__(self) -> str:
        return f"Saved({self[0]})"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved DIVE pipeline (4 dims, hidden 8, 2 heads) and what it compresses PROBE to."""
    folder = tmp_path_factory.mktemp("saved") / "pipeline"
    method = create_method("dive", dim=4, hidden=8, heads=2, train={"epochs": 1, "batch_size": 16, "progress": False})
    Pipeline(method.fit(toy_train_set())).save(folder)
    return Saved((folder, Pipeline.load(folder).transform(PROBE)))


def field_paths(record: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON record (the record itself is ``()``), plus a new key in each object."""
    paths = [prefix]
    if isinstance(record, dict):
        paths.append((*prefix, "unexpected_field"))
        for key, value in record.items():
            paths.extend(field_paths(value, (*prefix, key)))
    return paths


def leaf_values(record: Any) -> list[Any]:
    if isinstance(record, dict):
        return [value for child in record.values() for value in leaf_values(child)]
    return [record]


def json_values(originals: list[Any]):
    """Any JSON value: small and huge integers, floats (NaN and inf too), text, lists, objects, and
    the record's own values moved to another field (right type, wrong place)."""
    scalars = (st.none() | st.booleans() | st.integers(-3, 70) | st.sampled_from([10**12, 2**63, -2**63, 2**64])
               | st.floats() | st.text(max_size=8) | st.sampled_from(originals))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)


def apply_edit(record: Any, path: tuple, value: Any) -> Any:
    """``record`` with the field at ``path`` set to ``value`` (or removed); ``()`` replaces the record."""
    if not path:
        return {} if value == DELETE else value
    record = json.loads(json.dumps(record))
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if value == DELETE:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return record


def edits(folder: Path, name: str):
    record = json.loads((folder / name).read_text())
    return st.tuples(st.sampled_from(field_paths(record)), st.just(DELETE) | json_values(leaf_values(record)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_record(path: Path, record: Any) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")


def copy_of(folder: Path) -> Path:
    copy = Path(tempfile.mkdtemp(prefix="dive-edit-")) / "pipeline"
    shutil.copytree(folder, copy)
    return copy


def load_and_compress(folder: Path) -> np.ndarray | None:
    """The loaded pipeline's output for PROBE, or None if it was refused with a one-line DiveError."""
    try:
        with memory_guard():
            return Pipeline.load(folder).transform(PROBE)
    except DiveError as error:
        assert "\n" not in str(error), f"a refusal of more than one line: {error}"
        return None


def assert_refused_or_loads_as_saved(folder: Path, expected: np.ndarray) -> None:
    output = load_and_compress(folder)
    if output is not None:
        assert output.shape == expected.shape and np.allclose(output, expected, atol=1e-6), \
            "loaded, but does not compress as the saved pipeline did"


@PROPERTY
@given(data=st.data())
def test_any_value_in_any_config_field_with_checksums_updated_is_refused_or_loads_as_saved(saved, data):
    template, expected = saved
    edit = data.draw(edits(template, "method/config.json"), label="edit")
    folder = copy_of(template)
    try:
        config = folder / "method" / "config.json"
        write_record(config, apply_edit(json.loads(config.read_text()), *edit))
        manifest = json.loads((folder / "pipeline.json").read_text())
        manifest["checksums"]["method"] = sha256(config)
        write_record(folder / "pipeline.json", manifest)
        assert_refused_or_loads_as_saved(folder, expected)
    finally:
        shutil.rmtree(folder.parent)


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_any_value_in_any_pipeline_json_field_is_refused_or_loads_as_saved(saved, data):
    template, expected = saved
    edit = data.draw(edits(template, "pipeline.json"), label="edit")
    folder = copy_of(template)
    try:
        manifest = folder / "pipeline.json"
        write_record(manifest, apply_edit(json.loads(manifest.read_text()), *edit))
        assert_refused_or_loads_as_saved(folder, expected)
    finally:
        shutil.rmtree(folder.parent)


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_an_edited_config_without_its_checksum_is_refused_before_any_field_is_used(saved, data):
    template, _ = saved
    edit = data.draw(edits(template, "method/config.json"), label="edit")
    folder = copy_of(template)
    try:
        config = folder / "method" / "config.json"
        original = config.read_bytes()
        write_record(config, apply_edit(json.loads(original), *edit))
        assume(config.read_bytes() != original)
        built: list[str] = []
        real_init = torch.nn.Module.__init__

        def spy(self, *args, **kwargs):
            built.append(type(self).__name__)
            real_init(self, *args, **kwargs)

        with mock.patch.object(torch.nn.Module, "__init__", spy), memory_guard():
            with pytest.raises(DiveError) as refused:
                Pipeline.load(folder)
        message = str(refused.value)
        assert "pipeline.json" in message or "checksum" in message, message
        assert not built, f"fields were used before the checksum was checked: built {built}"
    finally:
        shutil.rmtree(folder.parent)


def test_a_huge_hidden_without_its_checksum_is_refused_before_the_constructor_runs(saved):
    """The issue's example: ``hidden`` = 10^12 (1.5 PB of weights) must never reach torch."""
    template, _ = saved
    folder = copy_of(template)
    try:
        config = folder / "method" / "config.json"
        write_record(config, apply_edit(json.loads(config.read_text()), ("config", "hidden"), 10**12))
        with memory_guard(), pytest.raises(DiveError, match="pipeline.json|checksum"):
            Pipeline.load(folder)
    finally:
        shutil.rmtree(folder.parent)
