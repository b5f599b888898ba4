"""reid_robust: noise-robust deep metric learning and person re-identification.

Subpackages: ``losses`` (robust and standard metric losses), ``data`` (datasets, label noise, samplers,
transforms), ``models`` (backbones and embedding heads), ``evaluation`` (FAISS-based ReID and retrieval
protocols), ``engine`` (configs, training, checkpoints).
"""
__version__ = "0.2.0"
