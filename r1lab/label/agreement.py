"""Agreement between two annotators' step labels, and between labels and exact step checks.

Cohen's kappa (Cohen 1960, "A coefficient of agreement for nominal scales"): observed agreement
p_o corrected for the agreement p_e expected by chance from each annotator's own label
frequencies, kappa = (p_o - p_e) / (1 - p_e). Computed over the steps both annotators labelled,
on all three labels (good / bad / unsure). Agreement with the exact check counts the steps a
task's ``step_checks`` judges (True/False) and the annotator marked good or bad.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1lab.label.store import read_records
from r1lab.label.traces import Trace, TraceError


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two equally long label sequences; NaN when chance agreement is 1 (both
    annotators used one and the same label throughout: kappa is undefined)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} labels against {len(b)}")
    if not a:
        raise ValueError("cohen_kappa: no labels to compare")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if p_e == 1.0:
        return float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def check_agreement(records: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(steps compared, steps where the label agrees with the exact check) over a label file."""
    compared = agreed = 0
    for rec in records.values():
        trace = Trace(rec["id"], rec.get("task", ""), rec.get("question", ""), rec.get("gold", ""), rec["steps"])
        checks = trace.checks()
        if checks is None:
            continue
        for label, ok in zip(rec["labels"], checks):
            if ok is not None and label in ("good", "bad"):
                compared += 1
                agreed += (label == "good") == ok
    return compared, agreed


def compare(path_a: str | Path, path_b: str | Path) -> list[dict[str, Any]]:
    """Rows of the agreement table for two label files of the same traces."""
    a, b = read_records(path_a), read_records(path_b)
    common = [i for i in a if i in b]
    if not common:
        raise TraceError(f"{path_a} and {path_b} share no trace id: label the same traces (r1lab label --from {path_a} --out ...)")
    la, lb = [], []
    for i in common:
        if a[i]["steps"] != b[i]["steps"]:
            raise TraceError(f"trace {i}: its steps differ between {path_a} and {path_b}")
        for x, y in zip(a[i]["labels"], b[i]["labels"]):
            if x is not None and y is not None:
                la.append(x)
                lb.append(y)
    if not la:
        raise TraceError(f"{path_a} and {path_b}: no step labelled in both")
    rows = [{"compared": "A vs B", "traces": len(common), "steps": len(la),
             "agreement": sum(x == y for x, y in zip(la, lb)) / len(la), "cohen_kappa": cohen_kappa(la, lb)}]
    for name, path, recs in (("A", path_a, a), ("B", path_b, b)):
        n, ok = check_agreement({i: recs[i] for i in common})
        if n:
            rows.append({"compared": f"{name} vs exact check", "traces": len(common), "steps": n, "agreement": ok / n, "cohen_kappa": None})
    return rows
