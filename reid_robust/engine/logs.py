"""What a training run writes as it goes: ``train.log`` (and the console), ``log.csv`` (one row per epoch),
optional TensorBoard scalars, and the progress of each epoch's steps (a bar on a terminal or in a notebook,
otherwise a log line about every 30 s)."""
from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import reid_robust.progress as progress_lib
from reid_robust.atomic import atomic_write_text

log = logging.getLogger("reid_robust")


class LogFile(logging.FileHandler):
    """train.log; a failed write (a full disk) is one warning line on stderr, once, not a traceback per record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"warning: cannot write {self.baseFilename}: {error}", file=sys.stderr)


def setup_logging(output_dir: Path | None, is_main: bool) -> None:
    """Readable logs: console and ``<output_dir>/train.log`` on rank 0, warnings only elsewhere."""
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    if is_main and output_dir is not None:
        fh = LogFile(output_dir / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _epoch_of(row: dict[str, Any]) -> int:
    try:
        return int(float(row.get("epoch") or 0))
    except ValueError:
        return 0


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (columns in order of appearance) atomically; nothing when there are none."""
    if not rows and not path.exists():
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """One row per epoch; the whole (small) file is rewritten atomically, so columns added later (evaluation
    metrics) widen the header and a full disk never leaves half a row."""
    write_csv(path, read_csv(path) + [row])


def truncate_csv(path: Path, epochs: int) -> None:
    """Keep the rows of the first ``epochs`` epochs: a resumed run trains the later ones again."""
    write_csv(path, [r for r in read_csv(path) if _epoch_of(r) <= epochs])


def json_default(obj: Any) -> Any:
    """numpy numbers as Python numbers, NaN as null (json.dumps would write the invalid ``NaN``)."""
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


def epoch_line(row: dict[str, Any]) -> str:
    """``lr=0.00035  images_per_s=812.4  loss=1.234 ...`` (every column but the epoch)."""
    return "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")


class TensorBoard:
    """Optional TensorBoard scalars (needs the ``tensorboard`` package)."""

    def __init__(self, out: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") \
                    from None
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress_bar(batches: Iterable, desc: str, shown: bool, initial: int, total: int) -> Iterable:
    """The steps of an epoch with their progress when ``shown``: a tqdm bar on a terminal or in a notebook,
    otherwise (a batch job, a log file) :class:`LoggedSteps`; ``batches`` itself when not ``shown``
    (``train.progress=false``). Both take the step values through ``set_postfix``."""
    if not shown:
        return batches
    if not progress_lib.interactive():
        return LoggedSteps(batches, desc, initial, total)
    from tqdm.auto import tqdm
    return tqdm(batches, desc=desc, initial=initial, total=total, unit="it", leave=False, dynamic_ncols=True,
                mininterval=1.0)


class LoggedSteps:
    """Training steps without a terminal: the batches, and a log line about every ``interval_s`` seconds
    (default ``reid_robust.progress.LOG_INTERVAL_S``) with the step, the total and the last step values given
    to :meth:`set_postfix` (img/s, losses): ``epoch 3/120: step 120/400  loss=1.234  img/s=812.4``."""

    def __init__(self, batches: Iterable, desc: str, initial: int, total: int, interval_s: float | None = None):
        self.batches, self.desc, self.step, self.total = batches, desc, initial, total
        self.interval_s = progress_lib.LOG_INTERVAL_S if interval_s is None else interval_s
        self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for batch in self.batches:
            yield batch
            self.step += 1

    def set_postfix(self, values: dict[str, Any]) -> None:
        """The values of the step being done (tqdm's interface); logged when ``interval_s`` has passed."""
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            shown = "  ".join(f"{k}={v}" for k, v in values.items())
            log.info("%s: step %d/%d  %s", self.desc, self.step + 1, self.total, shown)
