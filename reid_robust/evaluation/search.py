"""Similarity search over a gallery: input validation, block-wise exact scores, FAISS top-k indexes.

Scores are always "higher is more similar":
- ``cosine``: ``s(q, g) = q̂ᵀĝ`` on L2-normalised rows;
- ``euclidean``: ``s(q, g) = 2 qᵀg − ||g||²`` = ``||q||² − ||q − g||²``. Per query row this is the negative
  squared distance shifted by a constant, so it ranks exactly as the Euclidean distance does.

Exact scores are computed as float32 matrix products over blocks of queries, so the memory in use is
O(block x gallery) per worker thread, not O(queries x gallery) (leave-one-out retrieval of up to 8,192 items
holds its whole matrix, at most 256 MB: :func:`symmetric_product`). FAISS indexes give top-k lists (flat = exact, IVF or
HNSW = approximate) for visualisation, re-ranking candidates and the approximate evaluation mode.
"""
from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

import faiss
import numpy as np
import torch

METRICS = ("cosine", "euclidean")
DEFAULT_BLOCK_ELEMENTS = 1 << 24  # scores per block: 64 MB of float32
SYMMETRIC_MAX_ELEMENTS = 1 << 26  # leave-one-out score matrices up to 256 MB are computed whole, by halves
SYMMETRIC_BLOCKS = 8  # row blocks of a symmetric matrix: (k + 1) / 2k of the general product's multiply-adds
MIN_SYMMETRIC_BLOCK = 256  # rows
# squared norms of a scorable row: 2 qᵀg - ||g||² and the squared distances of re-ranking stay far below
# the float32 maximum (~3.4e38); below the minimum, a row cannot be normalised in float32 (cosine)
MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 16
MIN_SQUARED_NORM = float(np.finfo(np.float32).tiny) ** 2
MIN_CHUNK_ELEMENTS = 1 << 18  # row-wise numpy work is split over threads in chunks of at least this many values
SCALABLE_NORMS = (1e-15, 1e15)  # raw cosine scoring (scalable_norms) for norms within this range
T = TypeVar("T")


def worker_threads() -> int:
    """Threads the evaluators split row-wise numpy work over: torch's intra-op thread count
    (:func:`set_num_threads` sets it; torch's default is the number of physical cores)."""
    return max(1, torch.get_num_threads())


def map_row_chunks(fn: Callable[[int, int], T], num_rows: int, row_size: int = 1) -> list[T]:
    """``[fn(start, end)]`` over consecutive row ranges covering ``range(num_rows)``, one per worker thread
    (:func:`worker_threads`), each of at least ``MIN_CHUNK_ELEMENTS`` values (``row_size`` values a row).

    numpy releases the GIL in its sorts, searches and large elementwise loops, so chunks of rows run in
    parallel; the results are those of ``fn(0, num_rows)`` split by rows, whatever the thread count.
    """
    min_rows = max(1, -(-MIN_CHUNK_ELEMENTS // max(1, row_size)))
    chunks = max(1, min(worker_threads(), num_rows // min_rows))
    if chunks == 1:
        return [fn(0, num_rows)]
    edges = [num_rows * i // chunks for i in range(chunks + 1)]
    with ThreadPoolExecutor(chunks - 1) as pool:  # per call: nothing outlives it (fork-safe), ~0.1 ms a thread
        rest = [pool.submit(fn, edges[i], edges[i + 1]) for i in range(1, chunks)]
        first = fn(edges[0], edges[1])
        return [first] + [future.result() for future in rest]


def as_feature_matrix(x, name: str, metric: str | None = None) -> np.ndarray:
    """Validate a feature matrix [N, D] (numpy array or torch tensor) and return it as float32 numpy.

    Refused, naming the first bad row: a row that is not finite, a row too large to score in float32
    (squared norm above ``MAX_SQUARED_NORM``: its products or distances would overflow), and under the
    ``cosine`` metric a row whose norm is zero or too small to normalise in float32.
    """
    return checked_features(x, name, metric)[0]


def checked_features(x, name: str, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`as_feature_matrix`, also returning the rows' squared norms [N] float64 (for :func:`prepare`).

    float32 input is read twice in all (norms, then normalisation): a float32 row is finite exactly when
    its float64 squared norm is, so that norm is the finiteness check too.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature dimensions")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.dtype == np.float32:
        x = np.ascontiguousarray(x)
        squared = squared_norms(x)
        if not np.isfinite(squared).all():
            _refuse_non_finite(x, name)
    else:
        _refuse_non_finite(x, name)
        with np.errstate(over="ignore"):  # values beyond float32 become inf: check_norms names the row
            x = np.ascontiguousarray(x, dtype=np.float32)
        squared = squared_norms(x)
    check_norms(x, name, metric, squared)
    return x, squared


def _refuse_non_finite(x: np.ndarray, name: str) -> None:
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} row {int(bad[0])} is not finite (NaN or infinite; {bad.size} such row(s))")


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Squared L2 norms of the rows of float32 ``x`` [N, D], accumulated in float64 ([N]; neither overflows
    nor underflows for float32 rows; row chunks on :func:`worker_threads` threads)."""
    parts = map_row_chunks(lambda start, end: np.einsum("ij,ij->i", x[start:end], x[start:end], dtype=np.float64),
                           x.shape[0], x.shape[1])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def check_norms(x: np.ndarray, name: str, metric: str | None = None, squared: np.ndarray | None = None) -> None:
    """Refuse rows of the float32 matrix ``x`` [N, D] that cannot be scored exactly (see as_feature_matrix);
    ``squared``: their squared norms if already known."""
    squared = squared_norms(x) if squared is None else squared
    too_large = ~(squared <= MAX_SQUARED_NORM)  # also catches values that overflowed the float32 cast
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        raise ValueError(f"{name} row {row} is too large to score in float32 (norm {np.sqrt(squared[row]):.3g}, "
                         f"at most {np.sqrt(MAX_SQUARED_NORM):.3g})")
    if metric == "cosine":
        too_small = squared < MIN_SQUARED_NORM
        if too_small.any():
            row = int(np.flatnonzero(too_small)[0])
            what = "is all zeros" if squared[row] == 0 else f"has norm {np.sqrt(squared[row]):.3g}, too small"
            raise ValueError(f"{name} row {row} {what}: the cosine metric cannot normalise it")


def check_positive_int(value, name: str) -> int:
    """``value`` as an int if it is a positive integer (Python or numpy; bool and 1.0 are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_label_vector(x, name: str, length: int) -> np.ndarray:
    """Validate a label vector (identities or cameras) of ``length`` integers and return it as int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if x.shape[0] != length:
        raise ValueError(f"{name} has {x.shape[0]} entries but the features have {length} rows")
    integral = np.issubdtype(x.dtype, np.integer) or (
        np.issubdtype(x.dtype, np.floating) and bool(np.all(np.equal(np.mod(x, 1), 0))))
    if x.size and not integral:
        raise ValueError(f"{name} must hold integers, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def check_same_dim(query: np.ndarray, gallery: np.ndarray, qname="query_feats", gname="gallery_feats"):
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"{qname} have {query.shape[1]} dimensions but {gname} have {gallery.shape[1]}")


def l2_normalize(x: np.ndarray, eps: float = float(np.finfo(np.float32).tiny), squared: np.ndarray | None = None,
                 in_place: bool = False) -> np.ndarray:
    """Rows [N, D] float32 divided by their L2 norm, taken in float64 (a new float32 array, or ``x`` itself
    with ``in_place``; rows of norm below ``eps`` are divided by ``eps``: the evaluators refuse such rows
    first, see :func:`check_norms`). ``squared``: the rows' squared norms if already known. Row chunks are
    divided on :func:`worker_threads` threads."""
    norms = np.maximum(np.sqrt(squared_norms(x) if squared is None else squared), eps).astype(np.float32)[:, None]
    out = x if in_place else np.empty(x.shape, np.result_type(x, norms))
    map_row_chunks(lambda start, end: np.divide(x[start:end], norms[start:end], out=out[start:end]),
                   x.shape[0], x.shape[1])
    return out


def prepare(x: np.ndarray, metric: str, squared: np.ndarray | None = None, in_place: bool = False) -> np.ndarray:
    """The representation searched for ``metric``: L2-normalised rows for cosine, the raw rows otherwise
    (``squared`` and ``in_place`` as in :func:`l2_normalize`)."""
    return l2_normalize(x, squared=squared, in_place=in_place) if metric == "cosine" else x


def scalable_norms(squared: np.ndarray) -> bool:
    """Whether rows of these squared norms [N] may be scored raw and scaled afterwards (cosine without
    normalised copies): every norm within ``SCALABLE_NORMS``, so that raw products stay far inside float32's
    normal range (no overflow, no precision lost to subnormals)."""
    low, high = SCALABLE_NORMS
    return bool(squared.size) and low * low <= float(squared.min()) and float(squared.max()) <= high * high


def check_block_size(block_size: int | None) -> None:
    """``block_size`` (queries per score block) is None (automatic) or a positive integer."""
    if block_size is not None:
        check_positive_int(block_size, "block_size")


def default_block_size(num_gallery: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    return max(1, block_elements // max(1, num_gallery))


def product_backend() -> str:
    """``torch`` (MKL) or ``numpy`` (OpenBLAS) for the evaluators' score products: ``REID_ROBUST_PRODUCT`` when
    set, else ``torch`` on Intel CPUs and ``numpy`` elsewhere (MKL's slower paths on other vendors).

    Measured on the 2-core Intel VM: torch's product into a reused buffer is faster per block, and OpenBLAS's
    worker threads keep spinning for about 0.1 s after each product, taking a core from the counting that
    follows (benchmarks/eval.py: docs/evaluation.md)."""
    chosen = os.environ.get("REID_ROBUST_PRODUCT", "")
    if chosen in ("torch", "numpy"):
        return chosen
    return "torch" if _cpu_vendor() == "GenuineIntel" else "numpy"


@functools.lru_cache(maxsize=1)
def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def torch_ready(x: np.ndarray) -> bool:
    """Whether torch can read ``x`` in place: writable, C-contiguous float32 in native byte order."""
    return x.dtype == np.float32 and x.dtype.isnative and x.flags.writeable and x.flags.c_contiguous


def block_product(gallery: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``product(query_block, out)``: ``query_block @ gallery.T`` written into ``out`` ([B, G]) with the
    :func:`product_backend`; the gallery is read transposed, never copied. Inputs torch cannot read in place
    (other dtypes, byte orders or layouts, read-only arrays) take numpy's path."""
    if product_backend() == "torch" and torch_ready(gallery):
        g_t = torch.from_numpy(gallery).T

        def torch_product(q: np.ndarray, out: np.ndarray) -> np.ndarray:
            if not (torch_ready(q) and out.dtype == np.float32):
                return np.matmul(q, gallery.T, out=out)
            torch.mm(torch.from_numpy(q), g_t, out=torch.from_numpy(out))
            return out
        return torch_product
    g_np = gallery.T
    return lambda q, out: np.matmul(q, g_np, out=out)


def euclidean_offsets(gallery: np.ndarray, metric: str) -> np.ndarray | None:
    """``||g||²`` [G] of the gallery rows for the euclidean score ``2 qᵀg − ||g||²``; None for cosine."""
    return np.einsum("ij,ij->i", gallery, gallery) if metric == "euclidean" else None


def products_to_scores(products: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """The scores of a block of products ``qᵀg`` [B, G], in place: ``2 qᵀg − ||g||²`` with the
    :func:`euclidean_offsets`, the products themselves for cosine (``offsets`` None)."""
    if offsets is not None:
        products *= 2.0
        products -= offsets
    return products


def iter_score_blocks(query: np.ndarray, gallery: np.ndarray, metric: str,
                      block_size: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, end, scores[end - start, G])`` for consecutive query blocks (float32, higher = closer).

    ``query`` and ``gallery`` must already be prepared with :func:`prepare` (normalised for cosine). The
    products go through :func:`block_product` (torch's MKL on Intel CPUs, numpy's OpenBLAS elsewhere:
    :func:`product_backend`). Each block is a fresh array (the evaluators' threaded blocks reuse buffers:
    :mod:`reid_robust.evaluation.blocks`).
    """
    check_metric(metric)
    offsets = euclidean_offsets(gallery, metric)
    block = block_size or default_block_size(gallery.shape[0])
    product = block_product(gallery)
    dtype = np.result_type(query.dtype, gallery.dtype, np.float32)  # as numpy's product of the two would be
    for start in range(0, query.shape[0], block):
        end = min(start + block, query.shape[0])
        scores = product(query[start:end], np.empty((end - start, gallery.shape[0]), dtype))
        yield start, end, products_to_scores(scores, offsets)


def symmetric_products(num: int) -> bool:
    """Whether leave-one-out scores of ``num`` items are computed by :func:`symmetric_product`: at most
    ``SYMMETRIC_MAX_ELEMENTS`` scores, with torch's products (:func:`product_backend`; numpy's product into a
    strided block was slower than the general product on the 2-core VM)."""
    return num * num <= SYMMETRIC_MAX_ELEMENTS and product_backend() == "torch"


def symmetric_product(x: np.ndarray, blocks: int = SYMMETRIC_BLOCKS) -> np.ndarray:
    """``x @ x.T`` [N, N] for float32 ``x`` [N, D] that torch reads in place, multiplying only the block upper
    triangle: each of ``blocks`` row blocks is multiplied from its diagonal on, and those products right of
    its diagonal block are copied, transposed, below it ((blocks + 1) / (2 blocks) of the multiply-adds)."""
    num = x.shape[0]
    block = max(MIN_SYMMETRIC_BLOCK, -(-num // blocks))
    full = np.empty((num, num), dtype=np.float32)  # numpy's allocation: transparent huge pages where enabled
    full_t, x_t = torch.from_numpy(full), torch.from_numpy(x)
    for start in range(0, num, block):
        end = min(start + block, num)
        torch.mm(x_t[start:end], x_t[start:].T, out=full_t[start:end, start:])
        if end < num:
            full_t[end:, start:end].copy_(full_t[start:end, end:].T)
    return full


def iter_matrix_blocks(scores: np.ndarray, block_size: int | None = None):
    """Yield ``(start, end, block)`` from a precomputed score matrix [Q, G] (higher = closer)."""
    block = block_size or default_block_size(scores.shape[1])
    for start in range(0, scores.shape[0], block):
        end = min(start + block, scores.shape[0])
        yield start, end, np.ascontiguousarray(scores[start:end], dtype=np.float32)


@dataclass(frozen=True)
class ApproximateSearch:
    """Parameters of an approximate FAISS index (Jégou et al. IVF; Malkov & Yashunin HNSW).

    kind: ``"ivf"`` (inverted lists over a k-means coarse quantiser, ``nlist`` lists, ``nprobe`` visited)
    or ``"hnsw"`` (graph with ``hnsw_m`` links per node, ``ef_search`` candidates at query time).
    topk: length of each retrieved list; matches ranked beyond it count as missed.
    """

    kind: str = "ivf"
    topk: int = 1000
    nlist: int | None = None  # default: about 4 * sqrt(gallery size)
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 256
    seed: int = 0
    shards: int = 1  # > 1: one index per gallery row range, merged (evaluation/sharded.py)

    def __post_init__(self):
        if self.kind not in ("ivf", "hnsw"):
            raise ValueError(f"approximate kind must be 'ivf' or 'hnsw', got {self.kind!r}")
        for field in ("topk", "nprobe", "hnsw_m", "ef_construction", "ef_search", "shards"):
            check_positive_int(getattr(self, field), f"approximate {field}")
        if self.nlist is not None:
            check_positive_int(self.nlist, "approximate nlist")


def build_index(gallery: np.ndarray, metric: str, approximate: ApproximateSearch | None = None):
    """A FAISS index over prepared gallery rows: flat (exact) by default, IVF or HNSW when asked."""
    check_metric(metric)
    if approximate is not None and approximate.shards > 1:
        from .sharded import build_sharded_index  # imports this module

        return build_sharded_index(gallery, metric, approximate)
    dim = gallery.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index: faiss.Index
    if approximate is None:
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif approximate.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, approximate.hnsw_m, faiss_metric)
        index.hnsw.efConstruction = approximate.ef_construction
        index.hnsw.efSearch = approximate.ef_search
    else:
        n = gallery.shape[0]
        nlist = approximate.nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, n)
        index = cast(faiss.IndexIVF, faiss.index_factory(dim, f"IVF{nlist},Flat", faiss_metric))  # owns its quantiser
        index.cp.seed = approximate.seed
        index.train(gallery)
        index.nprobe = min(approximate.nprobe, nlist)
    index.add(gallery)
    return index


def search_topk(index, query: np.ndarray, k: int, metric: str,
                block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery indices per query row from a FAISS index, in blocks of queries.

    Returns ``(scores[Q, k] float32, indices[Q, k] int64)``, best first; scores follow this module's
    convention (higher = closer; for ``euclidean`` the negative squared distance). Slots with no result
    (k larger than what the index returns) have index -1.
    """
    k = min(k, index.ntotal)
    scores = np.empty((query.shape[0], k), dtype=np.float32)
    indices = np.empty((query.shape[0], k), dtype=np.int64)
    for start in range(0, query.shape[0], block_size):
        end = min(start + block_size, query.shape[0])
        d, i = index.search(np.ascontiguousarray(query[start:end]), k)
        scores[start:end] = d if metric == "cosine" else -d
        indices[start:end] = i
    return scores, indices


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in numpy's BLAS (score blocks), torch and FAISS (OpenMP)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
