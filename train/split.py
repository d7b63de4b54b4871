"""Stratified, seeded train/val/test split, and its record in ``split.json``.

Exact duplicate files are kept in the same split, so a photo that was copied
twice cannot be trained on and then "tested" on.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .dataset import SPLITS, DatasetError, Layout, Record

MIN_PER_CLASS = 3  # one image each for train, val and test


def make_split(layout: Layout, records: list[Record], ratios: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """Record indices per split (readable files only).

    A folder-per-class dataset is split per class with ``ratios``; an already
    split one keeps its folders, and a missing val or test split is carved
    from train with the same ratios.
    """
    readable = [i for i, r in enumerate(records) if r.ok]
    if not layout.presplit:
        _refuse_small_classes(layout, records, readable, "", ratios)
        return _stratified(records, readable, ratios, seed)
    by_split = {s: [i for i in readable if records[i].item.split == s] for s in SPLITS}
    missing = [s for s in ("val", "test") if not by_split[s]]
    if missing:
        val = ratios[1] if "val" in missing else 0.0
        test = ratios[2] if "test" in missing else 0.0
        carve = (1 - val - test, val, test)
        _refuse_small_classes(layout, records, by_split["train"], f"/{layout.split_dirs['train']}", carve)
        carved = _stratified(records, by_split["train"], carve, seed)
        for s in SPLITS:
            if s == "train" or s in missing:
                by_split[s] = carved[s]
    else:
        _refuse_small_classes(layout, records, by_split["train"], f"/{layout.split_dirs['train']}", (1.0, 0.0, 0.0))
    return by_split


def _refuse_small_classes(layout: Layout, records: list[Record], indices: list[int], where: str, ratios) -> None:
    need = 1 + sum(1 for r in ratios[1:] if r > 0)
    counts = defaultdict(int)
    for i in indices:
        counts[records[i].item.label] += 1
    for label in layout.labels:
        if counts[label] < need:
            if need == 1:
                raise DatasetError(f"{layout.data_dir}{where}/{label}: no readable training images")
            raise DatasetError(
                f"{layout.data_dir}{where}/{label}: {counts[label]} readable image(s), too few to split "
                f"{'/'.join(f'{r:g}' for r in ratios if r > 0)}: need at least {need} (one per split)"
            )


def _stratified(records: list[Record], indices: list[int], ratios, seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    # Group exact duplicates (same bytes) so each group lands in one split.
    groups: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        groups[records[i].sha256 or f"#{i}"].append(i)
    per_label: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        per_label[records[members[0]].item.label].append(sorted(members))
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in sorted(per_label):
        # Sorting first makes the permutation depend only on the seed, not on scan order.
        label_groups = sorted(per_label[label], key=lambda g: records[g[0]].item.rel)
        order = rng.permutation(len(label_groups))
        n = sum(len(g) for g in label_groups)
        want_test = max(1, round(n * ratios[2])) if ratios[2] > 0 else 0
        want_val = max(1, round(n * ratios[1])) if ratios[1] > 0 else 0
        taken = {"test": 0, "val": 0}
        for k in order:
            group = label_groups[k]
            if taken["test"] < want_test:
                target = "test"
            elif taken["val"] < want_val:
                target = "val"
            else:
                target = "train"
            if target != "train":
                taken[target] += len(group)
            out[target] += group
    return {s: sorted(v) for s, v in out.items()}


def split_json(layout: Layout, records: list[Record], split: dict[str, list[int]], ratios, seed: int) -> dict:
    """The ``split.json`` document (paths relative to ``data_dir``)."""
    doc: dict = {
        "data_dir": str(layout.data_dir),
        "seed": seed,
        "ratios": None if layout.presplit else list(ratios),
        "presplit": layout.presplit,
    }
    for s in SPLITS:
        doc[s] = [{"path": records[i].item.rel, "label": records[i].item.label} for i in split[s]]
    return doc


def split_from_json(doc: dict, layout: Layout, records: list[Record]) -> dict[str, list[int]]:
    """Map a saved ``split.json`` back to record indices (for ``--resume``); refuse if files changed."""
    index = {r.item.rel: i for i, r in enumerate(records) if r.ok}
    out: dict[str, list[int]] = {}
    for s in SPLITS:
        out[s] = []
        for entry in doc.get(s, []):
            if entry["path"] not in index:
                raise DatasetError(
                    f"{Path(doc['data_dir']) / entry['path']}: in split.json but no longer a readable image "
                    "(the dataset changed since the run started; start a new run instead of --resume)"
                )
            out[s].append(index[entry["path"]])
    return out
