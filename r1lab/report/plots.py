"""The one plotting module every stage and experiment draws through (matplotlib, Agg backend).

Every figure has a title, axis labels with units and, where there is more than one series, a
legend. Functions take plain Python data (lists, dicts, numpy arrays), write one PNG, and return
its path, so a caller never touches matplotlib state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only, the same on a laptop, CI and a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Series = tuple[Sequence[float], Sequence[float]]
"(x values, y values) of one run"

DPI = 110


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves(path: str | Path, arms: Mapping[str, Sequence[Series]], *, title: str, xlabel: str, ylabel: str,
           logx: bool = False) -> Path:
    """One line per arm; an arm of several runs (seeds) is drawn as its mean with a min-max band.
    Runs of one arm are aligned on the x values they share (a stopped seed shortens the band)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in arms.items():
        runs = [(list(x), list(y)) for x, y in runs if len(x)]
        if not runs:
            continue
        if len(runs) == 1:
            ax.plot(runs[0][0], runs[0][1], marker="o" if len(runs[0][0]) <= 12 else None, ms=3, label=name)
            continue
        shared = sorted(set.intersection(*(set(x) for x, _ in runs)))
        Y = np.array([[dict(zip(x, y))[s] for s in shared] for x, y in runs], dtype=float)  # (seeds, points)
        line, = ax.plot(shared, Y.mean(axis=0), label=f"{name} (mean of {len(runs)})")
        ax.fill_between(shared, Y.min(axis=0), Y.max(axis=0), color=line.get_color(), alpha=0.2, linewidth=0)
    xs = sorted({v for runs in arms.values() for x, _ in runs for v in x})
    if logx:
        ax.set_xscale("log")
        if 0 < len(xs) <= 12:  # few x values (k of pass@k): label each plainly, not as 2x10^0
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
    if not logx and xs and all(float(v).is_integer() for v in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no tick at 1.25
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(arms) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def bars(path: str | Path, values: Mapping[str, Sequence[float]], *, title: str, ylabel: str) -> Path:
    """One bar per arm: the mean over its values (seeds), whiskers at min and max, dots for each."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(values) + 2), 4.0))
    names = list(values)
    for i, name in enumerate(names):
        v = np.asarray(values[name], dtype=float)
        if v.size == 0:
            continue
        ax.bar(i, v.mean(), color=f"C{i % 10}", alpha=0.8)
        if v.size > 1:
            ax.errorbar(i, v.mean(), yerr=[[v.mean() - v.min()], [v.max() - v.mean()]], color="black", capsize=4)
            ax.scatter(np.full(v.size, i), v, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set(title=title, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def grouped_bars(path: str | Path, values: Mapping[str, Sequence[float]], *, series: Sequence[str], title: str, ylabel: str) -> Path:
    """One group of bars per name, one bar per series in it (``values[name][i]`` is series ``i``),
    e.g. pass@1 before and after RL per dataset; a legend names the series."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(values) * max(1, len(series)) / 2 + 2), 4.0))
    names, width = list(values), 0.8 / max(1, len(series))
    for j, label in enumerate(series):
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(names))], [float(values[n][j]) for n in names],
               width, color=f"C{j % 10}", alpha=0.85, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set(title=title, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def heatmap(path: str | Path, matrix: Sequence[Sequence[float]], *, title: str, xlabel: str, ylabel: str,
            colorbar: str, yticklabels: Sequence[str] | None = None) -> Path:
    """A matrix as an image (rows top to bottom), e.g. expert load: layers x experts."""
    M = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(min(12.0, 2.5 + 0.35 * M.shape[1]), min(8.0, 1.5 + 0.4 * M.shape[0])))
    im = ax.imshow(M, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=colorbar)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), yticklabels)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


def image_grid(path: str | Path, images: Sequence[np.ndarray], *, title: str, labels: Sequence[str] | None = None,
               ncols: int = 8) -> Path:
    """Images in a grid, each (3, H, W) or (H, W, 3) RGB (or (H, W) grey) in [0, 1], with an
    optional short label under each (a prompt, a verdict)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.7 * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        im = np.asarray(images[i], dtype=float)
        if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
            im = im.transpose(1, 2, 0)
        ax.imshow(np.clip(im, 0, 1), cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            ax.set_title(labels[i], fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
