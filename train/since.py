"""``edgeclass train DATA --since RUN``: what changed since an earlier run, and proof its test set held.

The content-hash split already keeps photos where they were; ``--since``
makes it a guarantee and shows it. Every photo of RUN's ``split.json`` that
is still in the dataset (found by its content hash, so renamed or moved files
count as the same photo) keeps RUN's split, and so does anything that is now
a near-duplicate of it; a group holding photos from several of RUN's splits
goes where its most protected member was (test before val before train).
The report lists the new photos per class and split, the removed ones, and
checks that each of RUN's test photos is a test photo again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .dataset import SPLITS, DatasetError, Record
from .split import SplitPlan

SPLIT_FILE = "split.json"


def read_earlier_split(run: str | Path) -> dict:
    """RUN's ``split.json``; a clear error when RUN is not a training directory."""
    path = Path(run) / SPLIT_FILE
    if not path.is_file():
        raise DatasetError(f"--since {run}: no {SPLIT_FILE} there (expected a training directory made by 'edgeclass train')")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(s, []), list) for s in SPLITS):
        raise DatasetError(f"{path}: expected train, val and test lists of photos")
    return doc


def check_same_rule(doc: dict, run: str | Path, ratios, seed: int) -> None:
    """Refuse a different seed or ratios: new photos would then follow another rule than RUN's."""
    same_ratios = doc.get("ratios") is None or [round(r, 6) for r in doc["ratios"]] == [round(r, 6) for r in ratios]
    if doc.get("seed") != seed or not same_ratios:
        theirs = ",".join(f"{r:g}" for r in doc.get("ratios") or ratios)
        raise DatasetError(
            f"--since {run}: that run was split with --seed {doc.get('seed')} --split {theirs}, this one with --seed {seed} "
            f"--split {','.join(f'{r:g}' for r in ratios)}; pass the same --seed and --split to continue its split"
        )


def earlier_assignment(doc: dict, records: list[Record], data_dir: Path) -> dict[str, str]:
    """Content hash -> RUN's split. Entries without a hash (older runs) are matched by path and read now."""
    out: dict[str, str] = {}
    by_path = {r.item.rel: r.sha256 for r in records if r.ok}
    for s in SPLITS:
        for entry in doc.get(s, []):
            sha = entry.get("sha256") or by_path.get(entry["path"])
            if sha is None and (data_dir / entry["path"]).is_file():
                sha = hashlib.sha256((data_dir / entry["path"]).read_bytes()).hexdigest()
            if sha:
                out[sha] = s
    return out


def compare_with_earlier(doc: dict, run: str | Path, earlier: dict[str, str], records: list[Record],
                         plan: SplitPlan) -> dict:
    """The ``since`` section of ``dataset.json``: new, removed and moved photos, and the test-set check."""
    where = plan.where()
    excluded = {i for g in plan.excluded for i in g}
    now: dict[str, tuple[int, str]] = {}
    for i, r in enumerate(records):
        if r.ok:
            now.setdefault(r.sha256, (i, where.get(i, "excluded" if i in excluded else "unused")))
    new = [{"path": records[i].item.rel, "label": records[i].item.label, "split": s}
           for sha, (i, s) in now.items() if sha not in earlier]
    paths = {entry.get("sha256"): entry["path"] for s in SPLITS for entry in doc.get(s, []) if entry.get("sha256")}
    removed = [{"path": paths.get(sha, sha), "split": s} for sha, s in earlier.items() if sha not in now]
    moved = [{"path": records[now[sha][0]].item.rel, "from": s, "to": now[sha][1]}
             for sha, s in earlier.items() if sha in now and now[sha][1] != s]
    test_before = [sha for sha, s in earlier.items() if s == "test" and sha in now]
    test_still = sum(1 for sha in test_before if now[sha][1] == "test")
    per_class = Counter((n["label"], n["split"]) for n in new)
    return {
        "run": str(Path(run).resolve()),
        "new": {"count": len(new), "per_class": {f"{label}/{s}": c for (label, s), c in sorted(per_class.items())},
                "list": new[:200]},
        "removed": {"count": len(removed), "list": removed[:200]},
        "moved": moved[:200],
        "earlier_test_photos_present": len(test_before),
        "earlier_test_photos_still_test": test_still,
        "earlier_test_photos_in_training": sum(1 for sha in test_before if now[sha][1] == "train"),
    }


def since_lines(report: dict) -> list[str]:
    """The report as plain lines for the terminal."""
    new, removed = report["new"], report["removed"]
    lines = [f"since {report['run']}: {new['count']} new photo(s), {removed['count']} removed, {len(report['moved'])} moved"]
    by_class: dict[str, list[str]] = {}
    for key, count in new["per_class"].items():
        label, split = key.rsplit("/", 1)
        by_class.setdefault(label, []).append(f"{split} {count}")
    lines += [f"  new in {label}: {', '.join(parts)}" for label, parts in by_class.items()]
    lines += [f"  moved: {m['path']} ({m['from']} -> {m['to']})" for m in report["moved"][:10]]
    present, still = report["earlier_test_photos_present"], report["earlier_test_photos_still_test"]
    verdict = "all of them are test photos now" if still == present else f"only {still} of them are test photos now"
    lines.append(f"  test set: {present} of the earlier run's test photos are still in the dataset; {verdict}; "
                 f"{report['earlier_test_photos_in_training']} in training")
    return lines
