"""``r1lab report FOLDER``: (re)build ``FOLDER/report.html`` from a run or experiment folder.

Works at any time: on a finished run, on one still going (its metrics so far) and on a stopped
one; see ``r1lab.report.html`` for what goes on the page.
"""

from __future__ import annotations

from pathlib import Path

from r1lab.config import Config
from r1lab.recipes import common
from r1lab.report import html


def main(cfg: Config) -> Path:
    if not cfg.out:
        raise common.StageError("report needs a folder: r1lab report RUN_OR_EXPERIMENT_FOLDER")
    folder = Path(cfg.out)
    if not folder.is_dir():
        raise common.StageError(f"report: no such folder {folder}")
    path = html.build(folder)
    print(f"report: wrote {path}")
    return path
