"""Timing helper shared by the benchmark scripts."""

import time


def best_seconds(fn, repeats: int = 5) -> float:
    """Best wall time (s) of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
