"""The train/val/test split, decided by each photo's content, and its record in ``split.json``.

Every photo's split follows from a hash of (seed, its bytes): a number ``u``
in [0, 1), test when ``u`` is below the test fraction, val below test + val,
train otherwise. No photo's split depends on any other photo, so adding
photos to a dataset, removing some or renaming files never moves another photo
between splits, and the retraining loop (save uncertain frames, sort them,
train again) keeps yesterday's test photos out of today's training set. Each
class is split in the requested ratios in expectation, not exactly.

Near-duplicates (exact copies, re-encodes, resizes, burst frames; see
:mod:`.near_duplicates`) form one group and move together: a group's ``u`` is
the smallest of its members'. So a photo moves only when a near-duplicate of
it is added or removed, and a new member can only lower the group's ``u``:
a group moves towards test, never from test or val into training.

Labels that disagree: photos of a group that are one picture under two labels
(an exact copy, or a near-duplicate whose thumbnail matches too, see
:func:`~.near_duplicates.same_picture`) are left out of every split and listed.
The group's other photos stay in: each label's part of the group is placed at
the whole group's ``u``, so they still share a split.

Small classes: hashing can leave a small class without a val or test photo.
Then the class's train group with the smallest ``u`` is moved to the empty
split (and a class without training photos gets its val group with the largest
``u``). These are the only photos whose split can change when the class grows;
``edgeclass train --since RUN`` keeps every photo where the earlier run had it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .dataset import SPLITS, DatasetError, Layout, Record
from .near_duplicates import NEAR_DUPLICATE_BITS, group_photos, label_conflicts

MIN_PER_CLASS = 3  # one picture each for train, val and test
METHOD = "content-hash"
# When an earlier run's photo is in a group now, the group keeps the most
# protected of its members' earlier splits: a test photo never becomes training data.
_PRIORITY = {"test": 2, "val": 1, "train": 0}


def split_point(seed: int, sha256: str) -> float:
    """The photo's position ``u`` in [0, 1): a hash of the seed and its content hash."""
    digest = hashlib.sha256(f"edgeclass-split\0{seed}\0{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hashed_split(u: float, ratios) -> str:
    """Where a photo at ``u`` goes for (train, val, test) ``ratios``."""
    if u < ratios[2]:
        return "test"
    if u < ratios[2] + ratios[1]:
        return "val"
    return "train"


@dataclass
class SplitPlan:
    """The split and how it came about (the audit and split.json report it)."""

    indices: dict[str, list[int]]  # split -> record indices, sorted
    groups: list[list[int]] = field(default_factory=list)  # near-duplicate groups of 2+ readable photos
    excluded: list[list[int]] = field(default_factory=list)  # groups whose photos have different labels
    moved: list[tuple[int, str, str]] = field(default_factory=list)  # (record, from, to) by the small-class rule
    pinned: int = 0  # photos placed where an earlier run had them (--since)

    def where(self) -> dict[int, str]:
        return {i: s for s, rows in self.indices.items() for i in rows}


def plan_split(layout: Layout, records: list[Record], ratios: tuple[float, float, float], seed: int,
               earlier: dict[str, str] | None = None, max_bits: int = NEAR_DUPLICATE_BITS) -> SplitPlan:
    """Split the readable records (see the module docstring).

    ``earlier`` maps content hashes to the split an earlier run put them in:
    those photos (and their near-duplicates) stay there. A folder-per-class
    dataset is split with ``ratios``; an already split one keeps its folders,
    and a missing val or test split is carved from train with the same rule.
    """
    readable = [i for i, r in enumerate(records) if r.ok]
    found = group_photos([records[i].sha256 for i in readable], [records[i].phash for i in readable], max_bits)
    groups = [[readable[k] for k in g] for g in found]
    excluded, usable = _resolve_label_conflicts(records, groups)
    whole = {i: g for g in groups for i in g}  # each photo's whole near-duplicate group: it decides ``u``
    plan = SplitPlan({s: [] for s in SPLITS}, [g for g in groups if len(g) > 1], excluded)
    if not layout.presplit:
        _refuse_small_classes(layout, records, usable, "", ratios)
        _assign(plan, records, usable, ratios, seed, earlier, whole)
    else:
        by_split = defaultdict(list)
        for g in usable:  # a group straddling folders is split by its folders: that is the leakage reported
            for s in SPLITS:
                members = [i for i in g if records[i].item.split == s]
                if members:
                    by_split[s].append(members)
        missing = [s for s in ("val", "test") if not by_split[s]]
        for s in SPLITS:
            if s not in missing and s != "train":
                plan.indices[s] = [i for g in by_split[s] for i in g]
        if missing:
            val = ratios[1] if "val" in missing else 0.0
            test = ratios[2] if "test" in missing else 0.0
            carve = (1 - val - test, val, test)
            _refuse_small_classes(layout, records, by_split["train"], f"/{layout.split_dirs['train']}", carve)
            # A group straddling folders is leakage, reported: only its train-folder photos place its train part.
            in_train = {i: [j for j in whole[i] if records[j].item.split == records[i].item.split] for i in whole}
            _assign(plan, records, by_split["train"], carve, seed, earlier, in_train)
        else:
            _refuse_small_classes(layout, records, by_split["train"], f"/{layout.split_dirs['train']}", (1.0, 0.0, 0.0))
            plan.indices["train"] = [i for g in by_split["train"] for i in g]
    plan.indices = {s: sorted(v) for s, v in plan.indices.items()}
    return plan


def make_split(layout: Layout, records: list[Record], ratios: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """Record indices per split: :func:`plan_split` without the bookkeeping."""
    return plan_split(layout, records, ratios, seed).indices


def _resolve_label_conflicts(records: list[Record], groups: list[list[int]]
                             ) -> tuple[list[list[int]], list[list[int]]]:
    """(excluded, usable): the photos left out for a label conflict, and single-label groups to place.

    A group with several labels becomes one part per label (its conflicted photos left out).
    """
    labels = [r.item.label for r in records]
    keys = [r.sha256 for r in records]
    thumbs = [r.thumb for r in records]
    excluded: list[list[int]] = []
    usable: list[list[int]] = []
    for group in groups:
        if len({labels[i] for i in group}) == 1:
            usable.append(group)
            continue
        conflicted = label_conflicts(group, labels, keys, thumbs)
        if conflicted:
            excluded.append(conflicted)
        parts: dict[str, list[int]] = defaultdict(list)
        for i in group:
            if i not in conflicted:
                parts[labels[i]].append(i)
        usable += parts.values()
    return excluded, usable


def _assign(plan: SplitPlan, records: list[Record], groups: list[list[int]], ratios, seed: int,
            earlier: dict[str, str] | None, whole: dict[int, list[int]]) -> None:
    """Place each group by its hash (or its earlier split), then fill a class's empty splits.

    A group's ``u`` is the smallest over its members' whole near-duplicate
    groups (``whole``), so the parts of a group with several labels are
    placed together.
    """
    per_label: dict[str, dict[str, list[tuple[float, list[int], bool]]]] = defaultdict(lambda: {s: [] for s in SPLITS})
    for group in groups:
        u = min(split_point(seed, records[j].sha256) for i in group for j in whole[i])
        before = [earlier[records[i].sha256] for i in group if earlier and records[i].sha256 in earlier]
        target = max(before, key=_PRIORITY.__getitem__) if before else hashed_split(u, ratios)
        plan.pinned += len(group) if before else 0
        per_label[records[group[0]].item.label][target].append((u, group, bool(before)))
    needed = [s for s in ("test", "val") if ratios[SPLITS.index(s)] > 0] + ["train"]
    for label in sorted(per_label):
        where = per_label[label]
        for s in needed:
            if where[s]:
                continue
            donors = [d for d in ("train", "val", "test") if d != s and len(where[d]) > 1]
            if donors:  # at least MIN_PER_CLASS pictures, so there is always one
                _move_one(plan, where, donors[0], s)
        for s in SPLITS:
            plan.indices[s] += [i for _, g, _ in where[s] for i in g]


_ORDER = {"test": 0, "val": 1, "train": 2}  # where each split sits on the u axis


def _move_one(plan: SplitPlan, where: dict, donor: str, target: str) -> None:
    """Move the donor's group nearest the target's side of the u axis (an unpinned one if any)."""
    towards_low = _ORDER[target] < _ORDER[donor]
    where[donor].sort(key=lambda e: (e[2], e[0] if towards_low else -e[0]))
    entry = where[donor].pop(0)
    where[target].append(entry)
    plan.moved += [(i, donor, target) for i in entry[1]]


def _refuse_small_classes(layout: Layout, records: list[Record], groups: list[list[int]], where: str, ratios) -> None:
    need = 1 + sum(1 for r in ratios[1:] if r > 0)
    pictures, images = defaultdict(int), defaultdict(int)
    for g in groups:
        pictures[records[g[0]].item.label] += 1
        images[records[g[0]].item.label] += len(g)
    for label in layout.labels:
        if pictures[label] < need:
            if need == 1:
                raise DatasetError(f"{layout.data_dir}{where}/{label}: no readable training images")
            distinct = "" if pictures[label] == images[label] else f", {pictures[label]} distinct (the rest are near-duplicates)"
            raise DatasetError(
                f"{layout.data_dir}{where}/{label}: {images[label]} readable image(s){distinct}, too few to split "
                f"{'/'.join(f'{r:g}' for r in ratios if r > 0)}: need at least {need} (one per split)"
            )


def split_json(layout: Layout, records: list[Record], split: dict[str, list[int]] | SplitPlan, ratios, seed: int) -> dict:
    """The ``split.json`` document (paths relative to ``data_dir``; each photo's content hash)."""
    plan = split if isinstance(split, SplitPlan) else SplitPlan(split)
    doc: dict = {
        "data_dir": str(layout.data_dir),
        "seed": seed,
        "ratios": None if layout.presplit else list(ratios),
        "presplit": layout.presplit,
        "method": METHOD,
        "near_duplicate_bits": NEAR_DUPLICATE_BITS,
    }
    for s in SPLITS:
        doc[s] = [{"path": records[i].item.rel, "label": records[i].item.label, "sha256": records[i].sha256}
                  for i in plan.indices[s]]
    doc["excluded"] = [{"path": records[i].item.rel, "label": records[i].item.label, "sha256": records[i].sha256,
                        "reason": "near-duplicate of a photo with another label"} for g in plan.excluded for i in g]
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
