"""The audit and sweep figures go through the one atomic write: a crash keeps the previous file, no temporary."""
import numpy as np
import pytest


def test_figure_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from reid_robust.analysis.plots import plot_precision_recall

    target = tmp_path / "figures" / "precision_recall.png"
    out = plot_precision_recall(np.array([1.0, 0.5]), np.array([0.5, 1.0]), target)
    assert out == target and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    previous = target.read_bytes()

    def crash(self, fh, **kwargs):
        if hasattr(fh, "write"):
            fh.write(b"half a picture")
        else:  # a path
            with open(fh, "wb") as handle:
                handle.write(b"half a picture")
        raise OSError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(OSError, match="renderer crashed"):
        plot_precision_recall(np.array([1.0]), np.array([1.0]), target)
    assert target.read_bytes() == previous
    assert [p.name for p in target.parent.iterdir()] == ["precision_recall.png"]
