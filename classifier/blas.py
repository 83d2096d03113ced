"""One BLAS thread for the small NumPy/scikit-learn fits of the frozen-feature recipe and the review order.

Those fits are a few hundred to a few thousand rows: more BLAS threads buy nothing, and on a busy CPU
(a worker beside the web process, a second worker, a test run) OpenBLAS's spinning threads made the head's
fit 13-25x slower (1.1-1.5 s against 20-28 s for 200 images, bench/RESULTS.md, "One BLAS thread").
torch's own threads are not BLAS's and are not touched.
"""

from __future__ import annotations


def one_blas_thread():
    """A context manager: NumPy/SciPy's BLAS (OpenBLAS, MKL) on one thread inside it, as before after it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
