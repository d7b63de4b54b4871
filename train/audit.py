"""The dataset audit: counts, imbalance, skipped files, duplicates and leakage.

:func:`build_audit` turns a scan and a split into the ``dataset.json``
document; :func:`print_audit` shows it as a table. Nothing here touches files.
"""

from __future__ import annotations

from collections import defaultdict

from .dataset import SPLITS, Layout, Record, fingerprint, handled_counts
from .near_duplicates import NEAR_DUPLICATE_BITS
from .since import since_lines
from .split import METHOD, SplitPlan

LIST_LIMIT = 200  # keep dataset.json readable on a dataset with thousands of stray files


def class_weights(counts: dict[str, int], labels: list[str]) -> dict[str, float]:
    """``n / (k * n_c)`` per class: each class contributes equally to the loss."""
    total = sum(counts[label] for label in labels)
    return {label: round(total / (len(labels) * counts[label]), 6) for label in labels}


def build_audit(layout: Layout, records: list[Record], split: SplitPlan | dict[str, list[int]]) -> dict:
    """The audit as a JSON-ready dict (``dataset.json``)."""
    plan = split if isinstance(split, SplitPlan) else SplitPlan(split)
    where = plan.where()
    counts = {label: {s: 0 for s in SPLITS} for label in layout.labels}
    for i, s in where.items():
        counts[records[i].item.label][s] += 1
    for label in counts:
        counts[label]["total"] = sum(counts[label][s] for s in SPLITS)
    train_counts = {label: c["train"] for label, c in counts.items()}
    totals = [c["total"] for c in counts.values()]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.ok:
            by_hash[r.sha256].append(i)
    exact = [[records[i].item.rel for i in g] for g in by_hash.values() if len(g) > 1]
    near = [[records[i].item.rel for i in g] for g in plan.groups]
    excluded = [[{"path": records[i].item.rel, "label": records[i].item.label} for i in g] for g in plan.excluded]
    leakage = [
        [{"path": records[i].item.rel, "split": where.get(i)} for i in g]
        for g in plan.groups
        if len({where[i] for i in g if i in where}) > 1
    ]
    moved = [{"path": records[i].item.rel, "label": records[i].item.label, "from": a, "to": b} for i, a, b in plan.moved]
    return {
        "data_dir": str(layout.data_dir),
        "layout": "presplit" if layout.presplit else "folder_per_class",
        "fingerprint": fingerprint(records),
        "labels": layout.labels,
        "counts": counts,
        "images": sum(totals),  # in the splits: readable, not excluded
        "readable": sum(1 for r in records if r.ok),
        "imbalance_ratio": round(max(train_counts.values()) / max(1, min(train_counts.values())), 3),
        "train_class_weights": class_weights(train_counts, layout.labels) if min(train_counts.values()) else None,
        "unreadable": [{"path": r.item.rel, "reason": r.error} for r in records if not r.ok],
        "non_images": {"count": len(layout.non_images), "paths": layout.non_images[:LIST_LIMIT]},
        "outside_class_folders": {"count": len(layout.stray), "paths": layout.stray[:LIST_LIMIT]},
        "handled": handled_counts(records),
        "duplicates": {"groups": len(exact), "files": sum(len(g) for g in exact), "list": exact[:LIST_LIMIT]},
        "near_duplicates": {"bits": NEAR_DUPLICATE_BITS, "groups": len(near), "files": sum(len(g) for g in near),
                            "list": near[:LIST_LIMIT]},
        "duplicates_with_different_labels": {"groups": len(excluded), "files": sum(len(g) for g in excluded),
                                             "excluded": True, "list": excluded[:LIST_LIMIT]},
        "leakage": {"groups": len(leakage), "list": leakage[:LIST_LIMIT]},
        "split": {"method": METHOD, "moved_for_small_classes": moved[:LIST_LIMIT], "kept_from_earlier_run": plan.pinned},
    }


def print_audit(audit: dict, console=None) -> None:
    """Print the audit as a table and a few plain lines (stdout by default)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{audit['data_dir']} ({audit['layout'].replace('_', ' ')})")
    table.add_column("class")
    for s in SPLITS:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for label, c in audit["counts"].items():
        table.add_row(label, *(str(c[s]) for s in SPLITS), str(c["total"]))
    table.add_row("[b]all[/b]", *(str(sum(c[s] for c in audit["counts"].values())) for s in SPLITS), str(audit["images"]))
    console.print(table)
    lines = [
        f"classes: {len(audit['labels'])}, readable images: {audit.get('readable', audit['images'])}"
        + (f" ({audit['images']} in the splits)" if audit.get("readable", audit["images"]) != audit["images"] else "") + ", "
        f"imbalance (largest/smallest train class): {audit['imbalance_ratio']:g}",
        f"fingerprint: {audit['fingerprint'][:16]}",
    ]
    if audit["handled"]:
        lines.append("handled by the decoder: " + ", ".join(f"{n} {tag}" for tag, n in audit["handled"].items()))
    if audit["unreadable"]:
        lines.append(f"skipped {len(audit['unreadable'])} unreadable file(s) (left untouched):")
        lines += [f"  {u['path']}: {u['reason']}" for u in audit["unreadable"][:20]]
        if len(audit["unreadable"]) > 20:
            lines.append(f"  ... and {len(audit['unreadable']) - 20} more (see dataset.json)")
    for key, what in (("non_images", "not images (by suffix), ignored"), ("outside_class_folders", "images outside any class folder, ignored")):
        if audit[key]["count"]:
            shown = ", ".join(audit[key]["paths"][:5])
            lines.append(f"{audit[key]['count']} file(s) {what}: {shown}{', ...' if audit[key]['count'] > 5 else ''}")
    dup, near = audit["duplicates"], audit["near_duplicates"]
    if dup["groups"]:
        lines.append(f"exact duplicates: {dup['groups']} group(s), {dup['files']} files, e.g. {' = '.join(dup['list'][0])}")
    if near["groups"]:
        lines.append(f"near-duplicates (exact copies, re-encodes, resizes, bursts; perceptual hash within {near['bits']} bits): "
                     f"{near['groups']} group(s), {near['files']} files, each kept in one split")
    conflicts = audit["duplicates_with_different_labels"]
    if conflicts["groups"]:
        lines.append(f"excluded: {conflicts['groups']} group(s) of the same picture under different labels, "
                     f"{conflicts['files']} files left out of every split (fix the labels to use them):")
        lines += ["  " + " = ".join(f"{g['path']} ({g['label']})" for g in group) for group in conflicts["list"][:20]]
    moved = audit["split"]["moved_for_small_classes"]
    if moved:
        lines.append(f"small classes: {len(moved)} photo(s) moved so every class has train, val and test photos: "
                     + ", ".join(f"{m['path']} ({m['from']} -> {m['to']})" for m in moved[:5]) + (", ..." if len(moved) > 5 else ""))
    if audit["leakage"]["groups"]:
        lines.append(f"LEAKAGE: {audit['leakage']['groups']} group(s) of the same picture straddle the split folders, e.g. "
                     + " = ".join(f"{g['path']} ({g['split']})" for g in audit["leakage"]["list"][0])
                     + " (--refuse-leakage makes this an error)")
    if "since" in audit:
        lines += since_lines(audit["since"])
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
