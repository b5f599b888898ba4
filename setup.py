from setuptools import find_packages, setup

setup(
    name="reid_robust",
    version="0.2.0",
    license="Apache-2.0",
    description="Noise-robust deep metric learning and person re-identification toolkit",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["reid_robust", "reid_robust.*"]),
    python_requires=">=3.9",
    install_requires=[
        # torch.load(weights_only=True) admitting numpy's RNG state of 0.1 checkpoints under both of numpy's
        # module names: safe_globals with (global, "module.name") pairs, torch 2.6
        "torch>=2.6",
        "torchvision",
        "faiss-cpu",
        "scikit-learn",
        "albumentations",
        "numpy",
        "threadpoolctl",  # thread limits of BLAS in the evaluator (already a scikit-learn dependency)
        "scipy",          # sparse re-ranking, ranks in the audit, Cars196 .mat files (a scikit-learn dependency)
        "pillow",         # image reading and drawing (a torchvision dependency)
        # cv2 (border modes of the augmentations) comes with albumentations' OpenCV requirement
        "pyyaml",       # configs
        "tqdm",         # progress bars
        "tabulate",     # result tables
        "matplotlib",   # noise curves, ranked lists, contact sheets
    ],
    entry_points={
        "console_scripts": [
            f"reid-{name}=reid_robust.cli.{name}:main"
            for name in ("train", "eval", "embed", "export", "sweep", "audit")
        ],
    },
    extras_require={
        "onnx": ["onnx", "onnxruntime"],
        "tensorboard": ["tensorboard"],
        "timm": ["timm"],  # model.backbone=timm:<model> (docs/models.md)
        "test": ["pytest", "pytorch-metric-learning", "onnx", "onnxruntime", "timm", "mypy"],
    },
)
