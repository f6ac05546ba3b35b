"""Shared by the benchmarks: the machine's measured limits, fitted methods, and result files.

Every ratio a benchmark prints divides two numbers measured in the same run on this machine.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dive.utils import configure_threads, versions

RESULTS = Path(__file__).resolve().parent / "results"


def best_seconds(run: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Fastest of ``repeats`` timed calls (after ``warmup`` untimed ones): the least-disturbed run."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_flops_per_second(size: int = 2048) -> float:
    """fp32 GEMM rate of torch on this machine (``size`` x ``size`` x ``size``): the compute roofline."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    seconds = best_seconds(lambda: torch.mm(left, right))
    return 2 * size ** 3 / seconds


def memory_bytes_per_second(n_bytes: int = 1 << 28) -> float:
    """Sustained read bandwidth, all cores: torch summing a ``n_bytes`` float32 array (far more
    than any cache holds)."""
    array = torch.ones(n_bytes // 4)
    seconds = best_seconds(lambda: array.sum(), repeats=5)
    return n_bytes / seconds


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def environment() -> dict[str, Any]:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)), "torch_threads": configure_threads(), "versions": versions(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **result}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
