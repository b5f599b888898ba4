"""Evaluation: FAISS/blocked search, Market-1501 and CUB-style retrieval protocols, re-ranking, pictures."""
from .reid import average_precision, evaluate_reid, evaluate_reid_distances, inverse_negative_penalty
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
    "search_topk",
    "set_num_threads",
]
