"""Your own verifiable problems from a file: ``jsonl:<path>``.

One JSON object per line, UTF-8::

    {"question": "12*3-5", "answer": "31"}
    {"question": "2+2*2", "answer": "8", "solution": "2+2=4\\n4*2=8"}

``question`` and ``answer`` are non-empty strings; ``solution`` (optional) is a worked solution,
used by pretraining's corpus for its worked style; ``stats`` (optional, an object) is ignored by
the task: ``r1lab curate`` writes each prompt's pass-rate statistics there. Blank lines are skipped.

Splits: as in ``ProceduralTask``, the test split is a fixed hash bucket of the question text
(about ``test_fraction`` of the rows), so a row's split depends neither on the other rows, nor on
their order, nor on any seed. Only a file so small that a split would be empty departs from
this: the lowest-hash question is held out (or the highest-hash one trained on). A question that
occurs twice keeps its first row; at least two distinct questions are needed.

Scoring: exact match of the extracted answer and the reference after ``strip()``, nothing more
(no number parsing, no case folding); write answers in the form the model should produce.

Every defect (missing file, not UTF-8, empty, a line that is not a JSON object, a missing, empty
or non-string field) is a ``ValueError`` of one line naming the file and the line, which the CLI
reports with exit code 2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from r1lab.tasks.base import Example, Split, Task, stable_hash

REQUIRED = ("question", "answer")
OPTIONAL = ("solution",)
IGNORED = ("stats",)
"fields kept for the reader and ignored by the task (``r1lab curate`` writes its pass-rate stats there)"


def read_rows(path: Path) -> list[Example]:
    """The examples of a JSONL file, in file order; ValueError (one line, naming the file and
    line) on any defect."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"dataset {path} does not exist") from None
    except OSError as e:
        raise ValueError(f"dataset {path} cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, if any, is dropped
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    rows: list[Example] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends unescaped.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a 5000-digit number, arrays nested too deeply
            raise ValueError(f"{path}:{n}: not usable JSON ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object with question and answer, got {type(row).__name__}")
        for key in REQUIRED:
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                got = "missing" if key not in row else "empty" if isinstance(value, str) else f"got {type(value).__name__}"
                raise ValueError(f"{path}:{n}: {key!r} must be a non-empty string ({got})")
        if not isinstance(row.get("solution", ""), str):
            raise ValueError(f"{path}:{n}: 'solution' must be a string (got {type(row['solution']).__name__})")
        for key in (*REQUIRED, *OPTIONAL):
            try:
                row.get(key, "").encode("utf-8")
            except UnicodeEncodeError:  # JSON escapes can spell a lone surrogate such as "\ud800"
                raise ValueError(f"{path}:{n}: {key!r} holds an invalid Unicode escape (a lone surrogate)") from None
        if not isinstance(row.get("stats", {}), dict):
            raise ValueError(f"{path}:{n}: 'stats' must be a JSON object (got {type(row['stats']).__name__})")
        unknown = sorted(set(row) - set(REQUIRED) - set(OPTIONAL) - set(IGNORED))
        if unknown:
            raise ValueError(f"{path}:{n}: unknown field {unknown[0]!r}; rows hold question, answer and optionally solution and stats")
        rows.append(Example(question=row["question"], answer=row["answer"].strip(), solution=row.get("solution", "")))
    if not rows:
        raise ValueError(f"dataset {path} is empty: expected JSON lines with question and answer")
    return rows


class JsonlTask(Task):
    """``jsonl:<path>``: rows of a JSON-lines file, split by a hash of the question."""

    test_fraction: float = 0.1

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = f"jsonl:{path}"
        seen: dict[str, Example] = {}
        for ex in read_rows(self.path):
            seen.setdefault(ex.question, ex)
        if len(seen) < 2:
            raise ValueError(f"dataset {self.path} has 1 distinct question; it needs at least 2 (one to hold out)")
        bucket = {q: stable_hash(q) % 10_000 for q in seen}
        test = {q for q, b in bucket.items() if b < self.test_fraction * 10_000}
        # A file so small that a split comes out empty: the lowest-hash question is held out, or
        # the highest-hash one is given back to training.
        if not test:
            test = {min(seen, key=lambda q: (bucket[q], q))}
        elif len(test) == len(seen):
            test.discard(max(seen, key=lambda q: (bucket[q], q)))
        # Pools in file order.
        self._pools: dict[Split, list[Example]] = {
            "test": [ex for q, ex in seen.items() if q in test],
            "train": [ex for q, ex in seen.items() if q not in test],
        }

    def sample(self, rng: random.Random, split: Split) -> Example:
        return rng.choice(self._pools[split])

    def pool(self, split: Split) -> list[Example]:
        """Every distinct example of ``split``, in file order."""
        return list(self._pools[split])

    def check(self, answer: str, example: Example) -> float:
        return 1.0 if answer.strip() == example.answer.strip() else 0.0
