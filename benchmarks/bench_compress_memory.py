"""Peak resident memory of ``dive compress`` on a 2,000,000-vector file vs a 200,000-vector one:
it must be bounded by the chunk size, not the file size.

Each run is a fresh ``dive compress`` subprocess (PCA 384 -> 128 + int8, chunks of 65,536 rows);
its peak RSS is read with ``getrusage`` by a wrapper process that runs nothing else.

    python benchmarks/bench_compress_memory.py        # writes ~3 GB of input under a temp folder
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import unit_rows, write_result
from dive.data import TrainSet
from dive.methods import create_method
from dive.pipeline import Pipeline
from dive.quantize import create_codec

SIZES = [200_000, 2_000_000]
CHUNK_ROWS = 65_536
DIM = 384
WRITE_BLOCK = 100_000

PEAK_RSS_WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
"""


def write_vectors(path: Path, n_rows: int) -> None:
    """An ``[n_rows, DIM]`` float32 .npy written block by block (never whole in memory)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (n_rows, DIM)})
        for start in range(0, n_rows, WRITE_BLOCK):
            handle.write(unit_rows(min(WRITE_BLOCK, n_rows - start), DIM, seed=start).tobytes())


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as scratch:
        scratch = Path(scratch)
        corpus = unit_rows(20_000, DIM)
        pipeline = Pipeline(create_method("pca", dim=128).fit(TrainSet.unsupervised(corpus)))
        pipeline.fit_codec(create_codec("int8"), corpus)
        pipeline.save(scratch / "pipeline")
        rows = []
        for n_rows in SIZES:
            source = scratch / f"vectors-{n_rows}.npy"
            write_vectors(source, n_rows)
            command = [sys.executable, "-m", "dive.cli", "compress", "--pipeline", str(scratch / "pipeline"),
                       "--input", str(source), "--output", str(scratch / "out.npy"), "--chunk-rows",
                       str(CHUNK_ROWS), "--no-progress"]
            started = time.perf_counter()
            peak_kib = int(subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *command], check=True,
                                          capture_output=True, text=True).stdout.split()[-1])
            seconds = time.perf_counter() - started
            rows.append({"n_vectors": n_rows, "input_bytes": source.stat().st_size, "peak_rss_bytes": peak_kib * 1024,
                         "seconds": seconds, "vectors_per_s": n_rows / seconds})
            print(f"{n_rows:>9,} vectors ({source.stat().st_size / 1e9:.2f} GB): peak RSS {peak_kib / 1024:.0f} MiB, "
                  f"{seconds:.1f} s")
            source.unlink()
        ratio = rows[-1]["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
        print(f"peak RSS ratio for 10x the input: {ratio:.2f} (1.00 = independent of input size)")
        write_result("compress_memory", {"chunk_rows": CHUNK_ROWS, "pipeline": "pca 128 + int8", "runs": rows,
                                         "rss_ratio_largest_to_smallest": ratio,
                                         "input_ratio_largest_to_smallest": SIZES[-1] / SIZES[0]})


if __name__ == "__main__":
    main()
