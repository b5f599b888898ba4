"""Evaluation: blocked exact search and FAISS indexes, Market-1501 and CUB-style retrieval protocols,
k-reciprocal re-ranking; ranked-list pictures in ``reid_robust.evaluation.visualize`` (imports matplotlib)."""
from .reid import average_precision, evaluate_reid, evaluate_reid_distances, inverse_negative_penalty
from .rerank import iter_rerank_blocks, k_reciprocal_rerank
from .retrieval import evaluate_retrieval
from .search import ApproximateSearch, build_index, search_topk, set_num_threads

__all__ = [
    "ApproximateSearch",
    "average_precision",
    "build_index",
    "evaluate_reid",
    "evaluate_reid_distances",
    "evaluate_retrieval",
    "inverse_negative_penalty",
    "iter_rerank_blocks",
    "k_reciprocal_rerank",
    "search_topk",
    "set_num_threads",
]
