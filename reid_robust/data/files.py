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


class InsideRoot:
    """Joins the image paths listed in an index file to their folder, refusing any that leaves it.

    ``inside(entry, where)`` returns ``root / entry``; an absolute entry, one that climbs out with ``..`` or
    one that leaves through a symbolic link (paths are resolved, so a root that is itself a link is fine)
    raises ValueError naming ``where`` (file:line) and the entry. An official index file never points outside
    its dataset; a tampered one could make any readable image of the machine a training or query image.
    Resolved folders are cached for the life of the object (one loader call).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.real_root = os.path.realpath(self.root)
        self._real_dirs: dict[str, str] = {}

    def _resolve(self, path: Path) -> str:
        if path.name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        parent = str(path.parent)
        if parent not in self._real_dirs:
            self._real_dirs[parent] = os.path.realpath(parent)
        return os.path.join(self._real_dirs[parent], path.name)

    def __call__(self, entry: str, where: str) -> Path:
        if os.path.isabs(entry):
            raise ValueError(f"{where}: entry {entry!r} is an absolute path; entries must be relative to {self.root}")
        path = self.root / entry
        real = self._resolve(path)
        if os.path.commonpath([self.real_root, real]) != self.real_root:
            how = "climbs out with '..'" if ".." in Path(entry).parts else "leads out through a symbolic link"
            raise ValueError(f"{where}: entry {entry!r} points outside {self.root} (it {how})")
        return path


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


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as a Path when it is a folder or can be made one; else ValueError naming ``flag`` (``--out``)
    and the file in the way (the folder itself or one of its parents)."""
    path = Path(path)
    for ancestor in (path, *path.parents):
        if ancestor.is_dir():
            return path
        if ancestor.exists():
            if ancestor == path:
                raise ValueError(f"{flag} {path} is a file; give a folder")
            raise ValueError(f"{flag} {path}: {ancestor} is a file, so no folder can be made there; give a folder")
    return path
