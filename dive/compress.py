"""Apply a saved pipeline to files of vectors: ``dive compress``.

Inputs and outputs are ``.npy`` (``[n, d]``) or Parquet (one vector column of fixed-length
float lists; any other columns, such as ids, are carried through to a Parquet output). The
file is streamed ``chunk_rows`` rows at a time with plain reads (no memory map), so memory is
bounded by the chunk, not the file; the output appears only when complete (temp file +
rename), so an error, Ctrl-C or kill leaves no partial file. :func:`compress_with_ray` runs the
same per-batch function over a Parquet dataset with Ray Data, on a laptop or a cluster.

Before anything is written, the input's base model is checked against the pipeline's
(:meth:`~dive.pipeline.Pipeline.check_base_model`): the model folder the caller names
(``model``, checked by its files, not its prompts), else the ``model.json`` that ``dive embed``
writes beside its vectors; an input with neither is compressed with a warning.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dive.data.sets import check_vectors
from dive.errors import DiveError
from dive.identity import ModelIdentity, read_identity
from dive.pipeline import Pipeline
from dive.distributed import start_ray
from dive.utils import TEMP_SUFFIX, atomic_path, remove_stale_temps, require, temp_prefix

DEFAULT_CHUNK_ROWS = 65536
VECTOR_COLUMN_NAMES = ("embedding", "embeddings", "vector", "vectors")
"""Parquet columns taken as the vectors when ``column`` is not given (first match)."""
FORMATS = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Chunk:
    """Rows ``start..start+len(vectors)`` of the input: their vectors and other columns (Parquet only)."""

    start: int
    vectors: np.ndarray
    other_columns: Any = None


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DiveError(f"{path}: unknown file type; expected one of {', '.join(FORMATS)}") from None


def check_input_model(pipeline: Pipeline, input_path: str | Path, model: str | Path | None = None) -> None:
    """Refuse input vectors whose base model is not the pipeline's (see the module docstring)."""
    if model is not None:
        from dive.encode import model_digest, model_path

        folder = model_path(str(model))
        pipeline.check_base_model(ModelIdentity(folder.name, model_digest(folder)), f"--model {folder}",
                                  prompts=False)
        return
    source = Path(input_path).parent if "://" not in str(input_path) else None
    identity = read_identity(source) if source is not None else None
    pipeline.check_base_model(identity, f"the vectors of {input_path}")


def compress_file(pipeline: Pipeline, input_path: str | Path, output_path: str | Path,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS, column: str | None = None,
                  progress: bool = True, model: str | Path | None = None) -> dict[str, Any]:
    """Stream ``input_path`` through ``pipeline.encode`` into ``output_path`` (formats by suffix).

    ``model``: the model folder that made the input vectors (checked against the pipeline's base model).
    """
    from tqdm.auto import tqdm

    check_input_model(pipeline, input_path, model)
    if pipeline.codec is not None and pipeline.codec.name == "lossless":
        raise DiveError("the lossless codec codes a whole matrix, not rows: compress with its encode() instead")
    if chunk_rows < 1:
        raise DiveError("chunk_rows must be at least 1")
    input_path, output_path = Path(input_path), Path(output_path)
    in_format, out_format = file_format(input_path), file_format(output_path)
    reader = NpyReader(input_path) if in_format == "npy" else ParquetReader(input_path, column)
    with reader, atomic_path(output_path) as tmp:
        if reader.n_rows == 0:
            raise DiveError(f"{input_path}: holds no vectors")
        writer = NpyWriter(tmp, reader.n_rows) if out_format == "npy" else ParquetWriter(tmp, reader.column)
        with writer, tqdm(total=reader.n_rows, unit="vec", desc="compress", disable=not progress) as bar:
            for chunk in reader.chunks(chunk_rows):
                rows = check_vectors(chunk.vectors, f"{input_path} (chunk from row {chunk.start})", dim=reader.dim)
                writer.write(pipeline.encode(rows), chunk.other_columns)
                bar.update(len(rows))
    return {"input": str(input_path), "output": str(output_path), "n_vectors": reader.n_rows, **pipeline.describe()}


class NpyReader:
    """Chunks of a C-ordered 2-D ``.npy`` file, read with plain file reads."""

    column = "embedding"

    def __init__(self, path: Path):
        self.path = path
        try:
            self.handle = open(path, "rb")
        except OSError as error:
            raise DiveError(f"{path}: cannot read ({error.strerror})") from None
        try:
            (self.n_rows, self.dim), self.dtype = _read_npy_header(self.handle)
        except ValueError as error:
            self.handle.close()
            raise DiveError(f"{path}: not a .npy file ({error})") from None
        except DiveError:
            self.handle.close()
            raise

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        for start in range(0, self.n_rows, chunk_rows):
            n_rows = min(chunk_rows, self.n_rows - start)
            expected = n_rows * self.dim * self.dtype.itemsize
            data = self.handle.read(expected)
            if len(data) != expected:
                raise DiveError(f"{self.path}: file is truncated (fewer rows than its header says)")
            yield Chunk(start, np.frombuffer(data, dtype=self.dtype).reshape(n_rows, self.dim))

    def __enter__(self) -> "NpyReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _read_npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    if fortran or len(shape) != 2 or dtype.hasobject:
        raise DiveError(f"{handle.name}: expected a C-ordered 2-D numeric array, got shape {shape} dtype {dtype}")
    if any(size < 0 for size in shape):  # numpy's header reader accepts them; reading would not
        raise DiveError(f"{handle.name}: not a valid .npy file: its header gives a negative size, shape {shape}")
    return shape, dtype


class NpyWriter:
    """Writes a ``.npy`` of ``n_rows`` rows whose width and dtype come from the first chunk."""

    def __init__(self, path: Path, n_rows: int):
        self.path, self.n_rows, self.handle = path, n_rows, open(path, "wb")
        self.header_written = False

    def write(self, rows: np.ndarray, other_columns: Any = None) -> None:
        if not self.header_written:
            header = {"descr": np.lib.format.dtype_to_descr(rows.dtype), "fortran_order": False,
                      "shape": (self.n_rows, *rows.shape[1:])}
            np.lib.format.write_array_header_2_0(self.handle, header)
            self.header_written = True
        self.handle.write(np.ascontiguousarray(rows).tobytes())

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


class ParquetReader:
    """Record batches of a Parquet file: the vector column as a matrix, the other columns as they are."""

    def __init__(self, path: Path, column: str | None):
        parquet = require("pyarrow.parquet", "parquet")
        import pyarrow as pa

        self.path = path
        try:
            self.file = parquet.ParquetFile(path)
        except (OSError, pa.ArrowException) as error:
            raise DiveError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
        names = self.file.schema_arrow.names
        self.column = vector_column(names, column, path)
        self.n_rows = self.file.metadata.num_rows
        self.dim: int | None = None

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        start = 0
        for batch in self.file.iter_batches(batch_size=chunk_rows):
            vectors = table_vectors(batch, self.column, f"{self.path} (chunk from row {start})")
            self.dim = self.dim or vectors.shape[1]
            yield Chunk(start, vectors, batch.drop_columns([self.column]))
            start += len(vectors)

    def __enter__(self) -> "ParquetReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def vector_column(names: list[str], column: str | None, source: str | Path) -> str:
    """``column`` if ``names`` has it, else the first of :data:`VECTOR_COLUMN_NAMES` present."""
    chosen = column or next((name for name in VECTOR_COLUMN_NAMES if name in names), None)
    if chosen not in names:
        raise DiveError(f"{source}: no vector column {'named ' + repr(column) if column else 'found'} "
                        f"(columns: {', '.join(names)}); pass --column")
    return chosen


def table_vectors(table: Any, column: str, what: str) -> np.ndarray:
    """The ``[n, d]`` matrix in ``table[column]`` (a column of equal-length numeric lists)."""
    import pyarrow as pa

    if column not in table.column_names:
        raise DiveError(f"{what}: no column {column!r}")
    array = table.column(column)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):
        raise DiveError(f"{what}: column {column!r} holds {array.type}, expected lists of floats")
    if array.null_count:
        raise DiveError(f"{what}: row {array.is_null().to_numpy(zero_copy_only=False).argmax()} of {column!r} is null")
    if len(array) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = array.value_lengths().to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise DiveError(f"{what}: row {row} of {column!r} has {lengths[row]} values, row 0 has {lengths[0]}")
    values = array.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.number):
        raise DiveError(f"{what}: column {column!r} holds {array.type.value_type}, expected floats")
    return values.reshape(len(array), int(lengths[0]))


def vectors_column(rows: np.ndarray) -> Any:
    """``[n, k]`` rows (floats or codes) as a fixed-size-list Arrow array."""
    import pyarrow as pa

    rows = np.ascontiguousarray(rows)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


def compress_table(pipeline: Pipeline, table: Any, column: str) -> Any:
    """``table`` with ``column`` replaced by the pipeline's output for it (floats or codec codes)."""
    rows = check_vectors(table_vectors(table, column, f"column {column!r}"), f"column {column!r}",
                         dim=pipeline.method.input_dim)
    index = table.column_names.index(column)
    return table.set_column(index, column, vectors_column(pipeline.encode(rows)))


class ParquetWriter:
    """Appends chunks as row groups: the other columns first, then the compressed vector column."""

    def __init__(self, path: Path, column: str):
        self.parquet = require("pyarrow.parquet", "parquet")
        self.path, self.column, self.writer = path, column, None

    def write(self, rows: np.ndarray, other_columns: Any = None) -> None:
        import pyarrow as pa

        table = pa.table({self.column: vectors_column(rows)})
        if other_columns is not None:
            table = pa.Table.from_batches([other_columns]).append_column(self.column, table.column(0))
        if self.writer is None:
            self.writer = self.parquet.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def __enter__(self) -> "ParquetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


class _RayCompressor:
    """Ray Data ``map_batches`` callable: loads the pipeline once per worker, compresses Arrow batches."""

    def __init__(self, pipeline_dir: str, column: str):
        self.pipeline, self.column = Pipeline.load(pipeline_dir), column

    def __call__(self, batch: Any) -> Any:
        return compress_table(self.pipeline, batch, self.column)


def compress_with_ray(pipeline_dir: str | Path, input_path: str, output_path: str, column: str | None = None,
                      batch_rows: int = DEFAULT_CHUNK_ROWS, workers: int = 1,
                      address: str | None = None, model: str | Path | None = None) -> dict[str, Any]:
    """Compress a Parquet dataset (file, folder or ``s3://``-style URI) with Ray Data into a Parquet folder.

    Runs on the Ray cluster at ``address`` (see :mod:`dive.distributed`) with ``workers``
    copies of the pipeline. Each output row keeps its other columns (ids), but Ray may write
    batches in another order than they were read (measured with Ray 2.60, even with
    ``preserve_order``), so the input must have a column besides the vectors. A local output
    folder appears only when complete; remote outputs are written in place by Ray.
    """
    pipeline = Pipeline.load(pipeline_dir)  # fail fast on the driver, before any worker starts
    check_input_model(pipeline, input_path, model)
    if pipeline.codec is not None and pipeline.codec.name == "lossless":
        raise DiveError("the lossless codec codes a whole matrix, not rows: it cannot run per batch")
    remote_output = "://" in str(output_path)
    if not remote_output and Path(output_path).exists():
        raise DiveError(f"{output_path}: already exists; choose a new folder")
    ray = start_ray(address, workers)
    dataset = ray.data.read_parquet(str(input_path))
    names = dataset.schema().names
    column = vector_column(names, column, input_path)
    if len(names) < 2:
        raise DiveError(f"{input_path}: has only the vector column {column!r}; Ray may reorder rows, so add an id "
                        "column to keep each output row identifiable (or use --engine local, which keeps the order)")
    n_rows = dataset.count()  # from the Parquet metadata
    compressed = dataset.map_batches(_RayCompressor, fn_constructor_args=(str(pipeline_dir), column),
                                     batch_format="pyarrow", batch_size=batch_rows, concurrency=workers)
    if remote_output:
        compressed.write_parquet(str(output_path))
    else:
        _write_folder_atomically(compressed, Path(output_path))
    return {"input": str(input_path), "output": str(output_path), "engine": "ray",
            "n_vectors": n_rows, **pipeline.describe()}


def _write_folder_atomically(dataset: Any, output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(output)
        scratch = Path(tempfile.mkdtemp(prefix=temp_prefix(output), suffix=TEMP_SUFFIX, dir=output.parent))
    except OSError as error:
        raise DiveError(f"cannot write {output}: {error.strerror or error}") from None
    try:
        dataset.write_parquet(str(scratch / "data"))
        os.replace(scratch / "data", output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
