"""`summarize(splits) -> str`: a table of identities, images and cameras per split."""
from __future__ import annotations

from tabulate import tabulate

from .records import DISTRACTOR_PID, JUNK_PID, DatasetSplits, ImageRecord


def _row(split: str, records: list[ImageRecord], special_ids: bool) -> list:
    pids = [r.pid for r in records]
    junk = sum(p == JUNK_PID for p in pids)
    distractors = sum(p == DISTRACTOR_PID for p in pids)
    ids = {p for p in pids if not special_ids or p not in (JUNK_PID, DISTRACTOR_PID)}
    return [split, len(ids), len(records), len({r.camid for r in records}),
            junk if special_ids else "-", distractors if special_ids else "-"]


def summarize(splits: DatasetSplits) -> str:
    """Plain-text table, one row per split: identities, images, cameras, junk (pid -1) and distractor (pid 0)
    images. Identities exclude -1 and 0 in the query/gallery of protocol "market"; protocol "cub" shows a single
    test row because query and gallery are the same list."""
    rows = [_row("train", splits.train, False)]
    if splits.protocol == "cub":
        rows.append(_row("test (query = gallery)", splits.gallery, False))
    else:
        rows.append(_row("query", splits.query, True))
        rows.append(_row("gallery", splits.gallery, True))
    headers = ["split", "identities", "images", "cameras", "junk (-1)", "distractors (0)"]
    title = f"{splits.name} (protocol {splits.protocol}, {splits.num_train_classes} training classes)"
    return title + "\n" + tabulate(rows, headers=headers, tablefmt="github")
