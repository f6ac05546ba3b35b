"""Search at scale: faiss (exact, HNSW, IVF-PQ), LanceDB and Qdrant local over 10^5-10^6 vectors,
128-d compressed against 384-d raw, each ratio from one run.

**The vectors.** No large corpus can be downloaded here, so the corpus is synthetic but built
from real MiniLM vectors: scifact's 5,183 document vectors (all-MiniLM-L6-v2, 384-d, dive's
embedding cache). Synthetic document ``i`` = a real document vector drawn uniformly (seeded)
+ ``NOISE`` x a Gaussian with the real documents' covariance (so the noise lies along the
directions the real corpus varies in, not isotropically), renormalised to unit length. With
``NOISE = 0.5`` a synthetic vector has cosine ~0.9 with its seed document and the corpus keeps
the real one's anisotropy and cluster structure. Queries are scifact's real query vectors (1,109;
``--queries`` above that adds perturbed copies the same way). The 128-d corpus is dive's ``pca``
method (``create_method("pca", dim=128)``) fitted on the 5,183 real document vectors and applied
to the synthetic corpus and the queries (its output is unit-normalised, as every dive method's);
384-d is the raw vectors (dive's ``frozen`` method: the identity, unit-normalised). Generated in
float32 chunks of 65,536 rows, seed 0, into ``.npy`` files in a scratch folder.

**A cell** = (engine, dim, size), run in its own child process (so its memory is its own and
``--max-seconds`` can stop it): the child loads the vectors, writes the index through dive's
engine class (``Engine.write`` with a ``Corpus``, exactly what ``dive index`` calls; the pipeline
is ``frozen`` for 384-d, ``pca-128`` for 128-d, the vectors are already its output), opens it
with ``Engine.open`` (what ``dive search`` calls) and searches all queries as one batch, k = 10.
Measured: build seconds (``Engine.write``: train + add + write to disk) and its CPU seconds; peak
RSS increase during the build over the RSS with the vectors loaded (VmHWM, reset through
``/proc/self/clear_refs`` before the build); RSS increase of opening the index after the vectors
are freed; bytes on disk; queries/s of the batch and its CPU seconds; recall@10 against exact
inner-product search (faiss ``IndexFlatIP``) over the same vectors. For 128-d cells also the
recall@10 against exact search of the 384-d vectors (what the compression itself costs). Where a
single search would run past the budget, the child times a probe of 10 queries first and
measures as many queries as fit in half of the time left (``n_queries`` records how many).

Engines (``--engines``): ``faiss-flat`` (``IndexFlatIP``, dive's exact faiss index),
``faiss-hnsw`` (``--factory HNSW32 --search-params efSearch=128``), ``faiss-ivfpq`` (``--factory
IVF{nlist},PQ{dim/4}x4fs --search-params nprobe=16``: faiss's fast-scan PQ, 4 bits per 4 dims, so
one byte per 8 dims at both dims; 8-bit ``PQ{dim/8}`` trains 160x slower here, 79 s for 20,000 x 384),
``faiss-ivfpq-rflat`` (the same re-ranking 10 x k candidates by the stored floats: ``IVF{nlist},PQ{dim/4}x4fs,RFlat
--search-params nprobe=16,k_factor_rf=10``, the float vectors kept in memory beside the codes), ``lancedb``
(dive's default: flat exact, metric dot), ``qdrant`` (local mode, exact: qdrant-client's pure
Python store; above ``--qdrant-max`` vectors it is skipped and recorded as such).

Threads: ``OMP_NUM_THREADS=1`` and ``faiss.omp_set_num_threads(1)`` in every child; LanceDB
(Rust) and Qdrant's numpy may still use more, so CPU seconds are recorded beside wall seconds.

    cd benchmarks && OMP_NUM_THREADS=1 DIVE_CACHE_DIR=... DIVE_DATA_DIR=... ../.venv/bin/python bench_scale.py \\
        --sizes 100000 --dims 128,384 --engines faiss-flat,faiss-hnsw,faiss-ivfpq,lancedb,qdrant --queries 1000
    # writes results/scale.json (--name sets the file name)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from common import write_result  # noqa: E402

NOISE = 0.5
CHUNK = 65_536
K = 10
SEED = 0
ENGINES = ("faiss-flat", "faiss-hnsw", "faiss-ivfpq", "faiss-ivfpq-rflat", "lancedb", "qdrant")
PROBE = 10


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def engine_config(name: str, dim: int, nlist: int):
    from dive.engines import EngineConfig

    if name == "faiss-flat":
        return EngineConfig(engine="faiss")
    if name == "faiss-hnsw":
        return EngineConfig(engine="faiss", factory="HNSW32", search_params="efSearch=128")
    if name == "faiss-ivfpq":
        return EngineConfig(engine="faiss", factory=f"IVF{nlist},PQ{dim // 4}x4fs", search_params="nprobe=16")
    if name == "faiss-ivfpq-rflat":
        return EngineConfig(engine="faiss", factory=f"IVF{nlist},PQ{dim // 4}x4fs,RFlat",
                            search_params="nprobe=16,k_factor_rf=10")
    return EngineConfig(engine=name)


def describe(config) -> str:
    return config.engine + (f" {config.factory}" if config.factory else "") + \
        (f" {config.search_params}" if config.search_params else "")


# ----- the corpus -------------------------------------------------------------------------------

def prepare(sizes: list[int], n_queries: int, scratch: Path) -> dict:
    """Fit the pipelines on scifact and save them; return the real vectors' noise model."""
    from dive.data import TrainSet
    from dive.experiments.run import ExperimentSpec, load_data
    from dive.methods import create_method
    from dive.pipeline import Pipeline

    _, embeddings = load_data(ExperimentSpec(dataset="scifact"))
    docs = np.ascontiguousarray(embeddings.doc_vectors, dtype=np.float32)
    train = TrainSet.unsupervised(docs)
    pipelines = {384: Pipeline(create_method("frozen").fit(train)),
                 128: Pipeline(create_method("pca", dim=128).fit(train))}
    for dim, pipeline in pipelines.items():
        pipeline.save(scratch / f"pipeline-{dim}")
    cholesky = np.linalg.cholesky(np.cov(docs.T) + 1e-6 * np.eye(docs.shape[1])).astype(np.float32)
    queries = np.ascontiguousarray(embeddings.query_vectors, dtype=np.float32)
    if n_queries > len(queries):
        rng = np.random.default_rng(SEED + 1)
        extra = perturb(queries[rng.integers(0, len(queries), n_queries - len(queries))], cholesky, rng)
        queries = np.concatenate([queries, extra])
    queries = queries[:n_queries]
    for dim, pipeline in pipelines.items():
        np.save(scratch / f"queries-{dim}.npy", np.ascontiguousarray(pipeline.transform(queries), dtype=np.float32))
    return {"docs": docs, "cholesky": cholesky, "pipelines": pipelines, "n_real_docs": len(docs),
            "n_real_queries": len(embeddings.query_vectors)}


def perturb(seeds: np.ndarray, cholesky: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(seeds.shape, dtype=np.float32) @ cholesky.T
    vectors = seeds + NOISE * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def generate(size: int, model: dict, scratch: Path) -> dict[int, Path]:
    """The synthetic corpus of ``size`` rows at 384 and 128 dims, as .npy files (float32, chunked)."""
    import faiss

    rng = np.random.default_rng(SEED)
    paths = {dim: scratch / f"corpus-{dim}-{size}.npy" for dim in model["pipelines"]}
    outs = {dim: np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, dim))
            for dim, path in paths.items()}
    truth_index = {dim: faiss.IndexFlatIP(dim) for dim in paths}
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        chunk = perturb(model["docs"][rng.integers(0, len(model["docs"]), n)], model["cholesky"], rng)
        for dim, pipeline in model["pipelines"].items():
            out = np.ascontiguousarray(pipeline.transform(chunk), dtype=np.float32)
            outs[dim][start:start + n] = out
            truth_index[dim].add(out)
    for dim, out in outs.items():
        out.flush()
        queries = np.load(scratch / f"queries-{dim}.npy")
        started = time.perf_counter()
        _, rows = truth_index[dim].search(queries, K)
        print(f"  exact ground truth {size:,} x {dim}: {time.perf_counter() - started:.1f} s "
              "(faiss IndexFlatIP, 1 thread)")
        np.save(scratch / f"truth-{dim}-{size}.npy", rows)
    del outs, truth_index
    return paths


# ----- one cell, in a child process ----------------------------------------------------------------

def run_cell(spec: dict) -> dict:
    import faiss

    from dive.engines import Corpus, create_engine
    from dive.pipeline import Pipeline

    faiss.omp_set_num_threads(1)
    started_cell = time.perf_counter()
    scratch, dim, size = Path(spec["scratch"]), spec["dim"], spec["size"]
    pipeline = Pipeline.load(scratch / f"pipeline-{dim}")
    config = engine_config(spec["engine"], dim, spec["nlist"])
    engine = create_engine(config)
    vectors = np.load(scratch / f"corpus-{dim}-{size}.npy")
    queries = np.load(scratch / f"queries-{dim}.npy")
    truth = np.load(scratch / f"truth-{dim}-{size}.npy")
    doc_ids = [str(row) for row in range(size)]
    cell_dir = scratch / f"cell-{spec['engine']}-{dim}-{size}"
    shutil.rmtree(cell_dir, ignore_errors=True)
    cell_dir.mkdir()
    target = cell_dir / "index.faiss" if engine.layout == "file" else cell_dir / "index"
    if engine.layout != "file":
        target.mkdir()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    rss_loaded = vm_kib("VmRSS")
    cpu, started = cpu_seconds(), time.perf_counter()
    fields = engine.write(pipeline, Corpus(doc_ids, vectors), target)
    build_seconds, build_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    peak_increase = vm_kib("VmHWM") - rss_loaded
    del vectors
    gc.collect()
    rss_before_open = vm_kib("VmRSS")
    searcher = engine.open(target, fields, pipeline, size)
    gc.collect()
    open_increase = vm_kib("VmRSS") - rss_before_open
    index_bytes = target.stat().st_size if target.is_file() else sum(
        path.stat().st_size for path in target.rglob("*") if path.is_file())
    n_queries = len(queries)
    left = spec["max_seconds"] - (time.perf_counter() - started_cell)
    started = time.perf_counter()
    searcher.search(queries[:PROBE], K)
    probe_seconds = time.perf_counter() - started
    if probe_seconds / PROBE * n_queries > 0.5 * (left - probe_seconds):
        n_queries = max(PROBE, min(n_queries, int(0.5 * (left - probe_seconds) / probe_seconds * PROBE)))
    cpu, started = cpu_seconds(), time.perf_counter()
    _, rows = searcher.search(queries[:n_queries], K)
    search_seconds, search_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    recall = float(np.mean([len(set(found) & set(exact)) / K for found, exact in zip(rows, truth[:n_queries])]))
    result = {"engine": spec["engine"], "config": describe(config), "dim": dim, "size": size,
              "exact_engine": engine.exact(pipeline), "build_seconds": build_seconds,
              "build_cpu_seconds": build_cpu, "build_peak_rss_increase_bytes": peak_increase * 1024,
              "open_rss_increase_bytes": open_increase * 1024, "index_bytes": index_bytes,
              "n_queries": n_queries, "search_seconds": search_seconds, "search_cpu_seconds": search_cpu,
              "queries_per_s": n_queries / search_seconds, "recall@10": recall}
    if dim != 384 and (scratch / f"truth-384-{size}.npy").exists():
        truth384 = np.load(scratch / f"truth-384-{size}.npy")
        result["recall@10_vs_384_exact"] = float(np.mean(
            [len(set(found) & set(exact)) / K for found, exact in zip(rows, truth384[:n_queries])]))
    close = getattr(searcher, "close", None)
    if close is not None:
        close()
    shutil.rmtree(cell_dir, ignore_errors=True)
    return result


def spawn_cell(spec: dict) -> dict:
    """Run a cell in a child process, stopped after ``max_seconds``."""
    base = {"engine": spec["engine"], "dim": spec["dim"], "size": spec["size"]}
    try:
        done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)], capture_output=True,
                              text=True, timeout=spec["max_seconds"])
    except subprocess.TimeoutExpired:
        shutil.rmtree(Path(spec["scratch"]) / f"cell-{spec['engine']}-{spec['dim']}-{spec['size']}",
                      ignore_errors=True)
        return {**base, "skipped": f"ran past --max-seconds {spec['max_seconds']} (stopped)"}
    if done.returncode != 0:
        return {**base, "skipped": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- the grid ----------------------------------------------------------------------------------

def ratios(cells: list[dict]) -> list[dict]:
    """Per (engine, size): every measured number at 128-d divided by the same at 384-d, one run."""
    out = []
    keys = ("build_seconds", "build_peak_rss_increase_bytes", "open_rss_increase_bytes", "index_bytes",
            "queries_per_s", "recall@10")
    by = {(cell["engine"], cell["dim"], cell["size"]): cell for cell in cells if "skipped" not in cell}
    for (engine, dim, size), cell in by.items():
        other = by.get((engine, 384, size))
        if dim == 384 or other is None:
            continue
        out.append({"engine": engine, "size": size, "dims": f"{dim}/384",
                    **{key: cell[key] / other[key] if other[key] else None for key in keys}})
    return out


def print_cell(cell: dict) -> None:
    if "skipped" in cell:
        print(f"{cell['engine']:<12} {cell['dim']:>4} {cell['size']:>9,}  skipped: {cell['skipped']}")
        return
    extra = f" (vs 384 exact {cell['recall@10_vs_384_exact']:.3f})" if "recall@10_vs_384_exact" in cell else ""
    print(f"{cell['engine']:<12} {cell['dim']:>4} {cell['size']:>9,} build {cell['build_seconds']:>7.1f} s "
          f"(cpu {cell['build_cpu_seconds']:>6.1f}) peak +{cell['build_peak_rss_increase_bytes'] / 2**20:>7.0f} MiB "
          f"open +{cell['open_rss_increase_bytes'] / 2**20:>6.0f} MiB disk {cell['index_bytes'] / 2**20:>7.0f} MiB "
          f"| {cell['queries_per_s']:>9.1f} q/s ({cell['n_queries']} q, cpu/wall "
          f"{cell['search_cpu_seconds'] / cell['search_seconds']:.2f}) recall@10 {cell['recall@10']:.3f}{extra}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--dims", default="128,384")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=900, help="per cell: the child is stopped after this")
    parser.add_argument("--qdrant-max", type=int, default=200_000, help="skip Qdrant local mode above this size")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists of faiss-ivfpq")
    parser.add_argument("--scratch", help="folder for the vectors and indexes (default: a temp folder)")
    parser.add_argument("--name", default="scale", help="results/NAME.json")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    dims = [int(dim) for dim in args.dims.split(",")]
    engines = args.engines.split(",")
    unknown = [name for name in engines if name not in ENGINES] + [dim for dim in dims if dim not in (128, 384)]
    if unknown:
        raise SystemExit(f"unknown engine or dim {unknown[0]!r} (engines: {', '.join(ENGINES)}; dims: 128, 384)")
    started_all = time.perf_counter()
    command = "bench_scale.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch_name:
        scratch = Path(scratch_name)
        model = prepare(sizes, args.queries, scratch)
        cells: list[dict] = []
        for size in sizes:
            started = time.perf_counter()
            generate(size, model, scratch)
            print(f"corpus {size:,}: generated in {time.perf_counter() - started:.1f} s", flush=True)
            for engine in engines:
                for dim in dims:
                    if engine == "qdrant" and size > args.qdrant_max:
                        cell = {"engine": engine, "dim": dim, "size": size, "skipped":
                                f"qdrant local mode is qdrant-client's pure-Python store (points pickled in "
                                f"SQLite, searched by numpy): ~2.1 GiB per 100,000 x 384 to build (results/"
                                f"scale.json), so above --qdrant-max {args.qdrant_max:,} it outgrows this machine"}
                    else:
                        cell = spawn_cell({"engine": engine, "dim": dim, "size": size, "scratch": str(scratch),
                                           "nlist": args.nlist, "max_seconds": args.max_seconds})
                    cells.append(cell)
                    print_cell(cell)
                    record(args, command, model, cells, started_all)
            for path in scratch.glob(f"*-{size}.npy"):
                path.unlink()
    for row in ratios(cells):
        print(f"{row['engine']:<12} {row['size']:>9,} 128/384: build x{row['build_seconds']:.2f}, peak memory "
              f"x{row['build_peak_rss_increase_bytes'] or 0:.2f}, disk x{row['index_bytes']:.2f}, q/s "
              f"x{row['queries_per_s']:.2f}, recall x{row['recall@10']:.3f}")
    record(args, command, model, cells, started_all)


def record(args, command: str, model: dict, cells: list[dict], started: float) -> None:
    write_result(args.name, {
        "command": command, "threads": "OMP_NUM_THREADS=1, faiss.omp_set_num_threads(1) per cell",
        "vectors": f"synthetic: a uniformly drawn scifact MiniLM document vector ({model['n_real_docs']} real) + "
                   f"{NOISE} x Gaussian with the real documents' covariance, renormalised; queries: scifact's "
                   f"{model['n_real_queries']} real query vectors; 128-d: dive pca-128 fitted on the real documents",
        "noise": NOISE, "seed": SEED, "k": K, "queries": args.queries, "max_seconds": args.max_seconds,
        "qdrant_max": args.qdrant_max, "nlist": args.nlist, "wall_seconds": time.perf_counter() - started,
        "cells": cells, "ratios_128_over_384": ratios(cells)})


if __name__ == "__main__":
    main()
