"""reid_robust.atomic: the one atomic write (old or new file, never a truncated one) and its users."""
import errno
import os
import subprocess
import sys

import pytest

from reid_robust import atomic
from reid_robust.atomic import atomic_write, atomic_write_text, is_disk_full, remove_stale_temporaries


def test_a_failing_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "old")

    def crash(fh):
        fh.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, crash)
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match=rf"^\[Errno {errno.ENOSPC}\] no space left on device while writing {path} "):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed"))
    assert not is_disk_full(OSError(errno.EACCES, "denied"))


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / "deep" / f".metrics.json.{int(dead.stdout)}.tmp"
    stale.parent.mkdir()
    stale.write_text("x")
    live = tmp_path / f".last.pth.{os.getppid()}.tmp"
    live.write_text("x")
    other = tmp_path / ".hidden.tmp"  # not of the pattern: not ours to delete
    other.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_the_synthetic_marker_is_written_atomically(tmp_path, monkeypatch):
    """The marker is written last; a full disk then leaves neither a marker nor a temporary in the tree."""
    from reid_robust.data.synthetic import MARKER_NAME, generate_synthetic

    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match=f"no space left on device while writing .*{MARKER_NAME}"):
        generate_synthetic(tmp_path, num_identities=2, height=32, width=16, num_distractors=0, num_junk=0)
    assert not (tmp_path / MARKER_NAME).exists() and not list(tmp_path.glob("*.tmp")) + list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    generate_synthetic(tmp_path, num_identities=2, height=32, width=16, num_distractors=0, num_junk=0)
    assert (tmp_path / MARKER_NAME).is_file()
