"""Exact score blocks made and counted on several threads at once.

:func:`run_score_blocks` calls ``work(start, end, scores)`` for every block of queries. With more than one
worker thread (:func:`~reid_robust.evaluation.search.worker_threads`), each thread multiplies its next block
into its own buffer with a single-threaded product, then counts it: while one thread counts, the other
multiplies, so the counting hides behind the products instead of following them. Measured on the 2-core VM at
SOP scale (benchmarks/eval.py): single-threaded products on two threads also run faster than one two-threaded
product (no synchronisation between the cores). Above ``OVERLAP_MAX_DIM`` feature dimensions the products
are long next to the counting and lose more than it costs when single-threaded, so each block is multiplied
on all threads and then counted on all threads (row chunks, :func:`~reid_robust.evaluation.ranking.
match_ranks`).

``work`` runs on the worker threads, one block at a time per thread, blocks in any order: it must only write
the rows ``start:end`` of its outputs. A block's scores are valid only during its ``work`` call.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from reid_robust.progress import progress as show_progress

from . import search
from .search import (
    DEFAULT_BLOCK_ELEMENTS,
    block_product,
    check_metric,
    euclidean_offsets,
    product_backend,
    products_to_scores,
    symmetric_product,
    symmetric_products,
    torch_ready,
)

BlockWork = Callable[[int, int, np.ndarray], None]
ScoresOf = Callable[[int, int, dict], np.ndarray]  # (start, end, the thread's scratch) -> scores [end - start, G]
PARALLEL_BLOCK_ELEMENTS = 1 << 25  # score buffers of all threads together: 128 MB of float32
# products overlap the counting up to this feature dimension; above it, one product on all threads, then the
# counting on all threads (measured on the 2-core VM: single-threaded products lose about 7 % at 2,048-d, about
# what the counting costs there, and win at 512-d, where the counting costs about 20 % of the product)
OVERLAP_MAX_DIM = 1024


@contextmanager
def single_threaded_products(numpy_products: bool) -> Iterator[None]:
    """torch (MKL and OpenMP) and, when numpy multiplies (``numpy_products``), numpy's BLAS limited to one
    thread; restored after. torch's count is process-wide: a thread whose first torch call falls inside
    this context keeps one thread (torch fixes a thread's count at its first parallel call)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if numpy_products:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(saved)


def block_rows(num_rows: int, num_cols: int, threads: int, block_size: int | None = None) -> int:
    """Rows per block: ``block_size`` if given (each of the ``threads`` then holds a block of that many rows:
    memory ``threads x block_size x num_cols`` scores), else the largest that keeps every thread's buffer
    within ``PARALLEL_BLOCK_ELEMENTS / threads`` (and ``DEFAULT_BLOCK_ELEMENTS``), evened out so that the
    blocks are of about equal size and their number is a multiple of ``threads`` (no thread idles at the
    end)."""
    if block_size:
        return block_size
    elements = min(DEFAULT_BLOCK_ELEMENTS, PARALLEL_BLOCK_ELEMENTS // max(1, threads))
    rows = max(1, elements // max(1, num_cols))
    count = -(-num_rows // rows)
    count = -(-count // threads) * threads
    return max(1, -(-num_rows // count))


def run_blocks(num_rows: int, block: int, scores_of: ScoresOf, work: BlockWork, threads: int,
               progress: bool | None = False, desc: str = "", numpy_products: bool = True) -> None:
    """``work(start, end, scores_of(start, end, scratch))`` for consecutive blocks of ``block`` rows, on
    ``threads`` threads (each with its own ``scratch`` dict; blocks taken in turn); an error in any thread
    stops the others after their current block and is raised here. ``numpy_products``: ``scores_of`` may
    call numpy's BLAS (limited to one thread too, :func:`single_threaded_products`)."""
    ranges = [(start, min(start + block, num_rows)) for start in range(0, num_rows, block)]
    threads = max(1, min(threads, len(ranges)))
    if threads == 1:
        scratch: dict = {}
        for start, end in show_progress(ranges, desc=desc, unit="block", enabled=progress):
            work(start, end, scores_of(start, end, scratch))
        return
    todo, lock, stop = iter(ranges), threading.Lock(), threading.Event()
    done: queue.Queue[BaseException | None] = queue.Queue()  # one item per finished block, or the error

    def worker() -> None:
        scratch: dict = {}
        try:
            while not stop.is_set():
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                work(item[0], item[1], scores_of(item[0], item[1], scratch))
                done.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            stop.set()
            done.put(exc)

    with single_threaded_products(numpy_products):
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        try:
            for _ in show_progress(range(len(ranges)), desc=desc, unit="block", enabled=progress):
                error = done.get()
                if error is not None:
                    raise error
        finally:
            stop.set()
            for thread in pool:
                thread.join()


def product_scores(query: np.ndarray, gallery: np.ndarray, metric: str, block: int,
                   gallery_norms: np.ndarray | None = None) -> ScoresOf:
    """Scores of query rows ``start:end`` against the gallery (as :func:`~reid_robust.evaluation.search.
    iter_score_blocks` computes them), written into a buffer of ``block`` rows kept in the thread's scratch.
    ``gallery_norms`` [G] (cosine only): the gallery is raw, and each product column is divided by its norm."""
    product = block_product(gallery)
    offsets = euclidean_offsets(gallery, metric)
    inverse = None if gallery_norms is None else (1.0 / gallery_norms).astype(np.float32)
    dtype = np.result_type(query.dtype, gallery.dtype, np.float32)

    def scores_of(start: int, end: int, scratch: dict) -> np.ndarray:
        if "buffer" not in scratch:
            scratch["buffer"] = np.empty((min(block, query.shape[0]), gallery.shape[0]), dtype=dtype)
        scores = products_to_scores(product(query[start:end], scratch["buffer"][: end - start]), offsets)
        if inverse is not None:
            scores *= inverse
        return scores
    return scores_of


def run_score_blocks(query: np.ndarray, gallery: np.ndarray, metric: str, work: BlockWork,
                     block_size: int | None = None, progress: bool | None = False, desc: str = "",
                     gallery_norms: np.ndarray | None = None) -> None:
    """``work(start, end, scores)`` for every block of queries, ``scores`` [end - start, G] as
    ``iter_score_blocks(query, gallery, metric)`` yields them (inputs prepared), on worker threads that
    multiply and count at once (module docstring). ``gallery_norms`` [G] (cosine): query and gallery are given
    raw and the scores are ``qᵀg / ||g||`` = ``||q|| cos(q, g)``, which orders each query's row as the cosine
    does and spares normalised copies of large feature sets (their fresh pages cost 30-150 ms at
    Market-1501 scale on the 2-core VM, against one multiply per score). Only for norms that
    :func:`~reid_robust.evaluation.search.scalable_norms` accepts."""
    check_metric(metric)
    if gallery_norms is not None and metric != "cosine":
        raise ValueError("gallery_norms apply to the cosine metric only")
    threads = search.worker_threads() if query.shape[1] <= OVERLAP_MAX_DIM else 1
    block = block_rows(query.shape[0], gallery.shape[0], threads, block_size)
    scores_of = product_scores(query, gallery, metric, block, gallery_norms)
    numpy_products = product_backend() == "numpy" or not (torch_ready(query) and torch_ready(gallery))
    run_blocks(query.shape[0], block, scores_of, work, threads, progress, desc, numpy_products)


def run_self_score_blocks(x: np.ndarray, metric: str, work: BlockWork, block_size: int | None = None,
                          progress: bool | None = False, desc: str = "") -> None:
    """:func:`run_score_blocks` of every item against all items (leave-one-out retrieval).

    Up to ``SYMMETRIC_MAX_ELEMENTS`` scores with torch's products (:func:`~reid_robust.evaluation.search.
    symmetric_products`), the [N, N] matrix is computed whole first by
    :func:`~reid_robust.evaluation.search.symmetric_product` (x xᵀ is symmetric: 9/16 of the general product's
    multiply-adds), then its row blocks are counted on the worker threads."""
    check_metric(metric)
    num = x.shape[0]
    if not symmetric_products(num):
        run_score_blocks(x, x, metric, work, block_size, progress, desc)
        return
    if not torch_ready(x):
        x = np.array(x, dtype=np.float32, order="C")  # a small copy that torch reads in place
    full = symmetric_product(x)
    offsets = euclidean_offsets(x, metric)

    def scores_of(start: int, end: int, scratch: dict) -> np.ndarray:
        return products_to_scores(full[start:end], offsets)  # in place: each block's rows are its own
    threads = search.worker_threads()
    run_blocks(num, block_rows(num, num, threads, block_size), scores_of, work, threads, progress, desc,
               numpy_products=False)
