"""The folder every experiment writes (``experiments/<name>.py``), read back by the report.

    <out>/summary.json   {"experiment", "command", "quick", "seeds", "arms": {...}, "verdict", ...}
    <out>/table.md       the comparison table, as printed
    <out>/*.png          plots drawn through ``r1lab.report.plots``

``summary.json`` is written last, atomically, so a folder with one is complete.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from r1lab import tracking


def command_line() -> str:
    """The command that produced this folder, to paste back into a shell."""
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def write(out: str | Path, name: str, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
          title: str = "") -> Path:
    """Print the table, write ``table.md`` and ``summary.json`` (``name``, the command line and
    ``rows`` added to ``summary``); return the summary's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = tracking.format_table(list(rows), title=title or name)
    print(table)
    (out / "table.md").write_text(table + "\n")
    body = {"experiment": name, "command": command_line(), **summary, "rows": list(rows)}
    tmp = out / f"summary.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(body, indent=2, default=float) + "\n")
    os.replace(tmp, out / "summary.json")
    return out / "summary.json"
