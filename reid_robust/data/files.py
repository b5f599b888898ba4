"""Small file-system checks shared by the loaders: every error names what was expected and where."""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def is_image_file(name: str) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return `path` as an absolute Path, or raise FileNotFoundError saying which directory was expected."""
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"expected {what} at {path}, but it {state}")
    return path


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return `path` as an absolute Path, or raise FileNotFoundError saying which file was expected."""
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"expected {what} at {path}, but it does not exist")
    return path


def list_images(directory: Path) -> list[str]:
    """Sorted names of the image files directly inside `directory` (non-image files are ignored)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_file() and is_image_file(e.name))


def check_files_exist(paths: list[str], dataset: str, listed_in: str) -> None:
    """Raise FileNotFoundError naming the first missing files when a list file points at absent images."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:3])
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} of {len(paths)} images listed in {listed_in} are missing, e.g. {shown}"
        )


def find_root(root: str | os.PathLike, marker: str, nested: tuple[str, ...], what: str) -> Path:
    """Return the directory holding `marker`: `root` itself or one of its `nested` subdirectories.

    Lets users point at either the extracted archive folder or its parent.
    """
    base = require_dir(root, f"the {what} root directory")
    for candidate in (base, *(base / n for n in nested)):
        if (candidate / marker).exists():
            return candidate
    places = ", ".join(str(base / n) for n in nested)
    raise FileNotFoundError(
        f"{what}: expected {marker!r} in {base}" + (f" (or in {places})" if nested else "")
    )
