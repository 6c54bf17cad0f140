"""One math thread per request while serving: the request threads are the parallelism.

Each search is one small matrix-vector product (or a few ANN probes). With numpy's OpenBLAS (and
faiss's OpenMP) free to use every core, each of the server's request threads woke the math
library's own threads, which then spin-waited for more work: measured on 2 cores, 128 request
threads and 4,000 images, 25 ms of CPU per search against 2.8 ms with one math thread, and 300
concurrent searches took 9.5 s instead of 2.2 s (the latency-bound ideal is 1.9 s). Indexing keeps
the libraries' defaults: its large batches do gain from several threads.
"""

from __future__ import annotations

import contextlib

from threadpoolctl import threadpool_limits


def limit_math_threads() -> None:
    """Limit BLAS and OpenMP to one thread for the rest of the process (the libraries loaded by then)."""
    # faiss is loaded now so that its OpenMP runtime is among the ones limited below (threadpoolctl
    # limits the libraries already loaded); an index switches to the ANN path as it grows.
    with contextlib.suppress(ImportError):
        import faiss  # noqa: F401
    threadpool_limits(limits=1)
