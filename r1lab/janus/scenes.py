"""Procedural scenes: coloured shapes on a 2x2 grid of a 32x32 image, with exact captions,
questions with exact answers, a canonical key, disjoint train/test splits, and an exact detector.

A scene puts 1-3 objects into distinct cells of a 2x2 grid (16x16 pixels each, object centred in
its cell); an object is a colour (red, green, blue, yellow), a shape (square, circle, triangle)
and a size (small: a 7-pixel box, big: a 13-pixel box), on a black background. Its caption lists
the objects in cell order ("big red square top left, small blue circle bottom right"); the
caption *is* the canonical key (cell order makes it unique), and the test split is a hash bucket
of it, as for the text tasks (``ProceduralTask``): no test scene is ever drawn for training.

The detector reads an image back into a scene: each pixel goes to its nearest palette colour,
each cell's majority colour is matched against the rendered templates of every (shape, size) by
intersection over union. On a clean render it returns the scene exactly (tested on every
template); on a generated image it returns None when a cell holds something no template matches,
so "the detector agrees with the prompt" is an exact, all-or-nothing verdict.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from r1lab.tasks.base import Split, stable_hash

SIZE = 32
"image side in pixels"
CELL = 16
"grid cell side: a 2x2 grid"
CELLS = ("top left", "top right", "bottom left", "bottom right")
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
SHAPES = ("square", "circle", "triangle")
SIZES = {"small": 3, "big": 6}
"half-side of the object's box in pixels"
NUMBER_WORDS = ("none", "one", "two", "three", "four")
TEST_FRACTION = 0.1
"share of scene keys in the held-out split"
MIN_PIXELS = 8
"fewer coloured pixels than this in a cell: the cell is empty"
MIN_IOU = 0.6
"a cell's mask must overlap its best template at least this much, else the image is unreadable"


@dataclass(frozen=True)
class Obj:
    cell: int  # index into CELLS
    colour: str
    shape: str
    size: str

    def words(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # sorted by cell, at most one per cell

    def caption(self) -> str:
        return ", ".join(f"{o.words()} {CELLS[o.cell]}" for o in self.objects)

    def key(self) -> str:
        """Canonical key: the caption (objects in cell order, so one string per scene)."""
        return self.caption()

    def at(self, cell: int) -> Obj | None:
        return next((o for o in self.objects if o.cell == cell), None)


def split_of(scene: Scene) -> Split:
    return "test" if stable_hash("scene:" + scene.key()) % 10_000 < TEST_FRACTION * 10_000 else "train"


def random_scene(rng: random.Random) -> Scene:
    n = rng.randint(1, 3)
    cells = sorted(rng.sample(range(4), n))
    return Scene(tuple(Obj(c, rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(SIZES))) for c in cells))


def sample_scene(rng: random.Random, split: Split) -> Scene:
    """A random scene of ``split`` (rejection on the key's hash bucket)."""
    while True:
        scene = random_scene(rng)
        if split_of(scene) == split:
            return scene


def shape_mask(shape: str, size: str, cell: int) -> np.ndarray:
    """(SIZE, SIZE) boolean mask of one object drawn in ``cell``."""
    h = SIZES[size]
    cy, cx = (cell // 2) * CELL + CELL // 2, (cell % 2) * CELL + CELL // 2
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    dy, dx = y - cy, x - cx
    if shape == "square":
        m = (abs(dy) <= h) & (abs(dx) <= h)
    elif shape == "circle":
        m = dy * dy + dx * dx <= h * h + h  # +h rounds the rim like a midpoint circle
    else:  # triangle pointing up: apex at the top of the box, base on its bottom row
        m = (dy >= -h) & (dy <= h) & (2 * abs(dx) <= dy + h)
    return m


def render(scene: Scene) -> np.ndarray:
    """(3, SIZE, SIZE) float32 image in [0, 1]."""
    img = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    for o in scene.objects:
        img[:, shape_mask(o.shape, o.size, o.cell)] = np.asarray(COLOURS[o.colour], dtype=np.float32)[:, None]
    return img


_PALETTE = np.asarray([(0.0, 0.0, 0.0), *COLOURS.values()], dtype=np.float32)  # (5, 3): background first
_TEMPLATES = {(c, s, z): shape_mask(s, z, c) for c in range(4) for s in SHAPES for z in SIZES}


UNREADABLE = "unreadable"
"what ``read_cells`` says of a cell whose pixels match no object"


def read_cells(image: np.ndarray) -> list[Obj | None | str]:
    """Per grid cell, what the image shows there: an ``Obj``, None (empty) or ``UNREADABLE``."""
    img = np.asarray(image, dtype=np.float32).reshape(3, SIZE, SIZE)
    dist = ((img.transpose(1, 2, 0)[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)  # (H, W, 5)
    label = dist.argmin(-1)  # 0 background, 1.. colours
    names = list(COLOURS)
    cells: list[Obj | None | str] = []
    for cell in range(4):
        r, c = (cell // 2) * CELL, (cell % 2) * CELL
        sub = label[r : r + CELL, c : c + CELL]
        counts = np.bincount(sub.ravel(), minlength=len(_PALETTE))[1:]
        if counts.sum() < MIN_PIXELS:
            cells.append(None)
            continue
        colour = int(counts.argmax())
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        mask[r : r + CELL, c : c + CELL] = sub != 0
        best, best_iou = None, 0.0
        for (tc, s, z), t in _TEMPLATES.items():
            if tc != cell:
                continue
            iou = (mask & t).sum() / (mask | t).sum()
            if iou > best_iou:
                best, best_iou = (s, z), iou
        cells.append(UNREADABLE if best is None or best_iou < MIN_IOU else Obj(cell, names[colour], best[0], best[1]))
    return cells


def detect(image: np.ndarray) -> Scene | None:
    """The scene an image shows, or None when some cell holds something that is no object."""
    cells = read_cells(image)
    if UNREADABLE in cells:
        return None
    return Scene(tuple(o for o in cells if isinstance(o, Obj)))


def cell_agreement(image: np.ndarray, scene: Scene) -> float:
    """Share of the four cells the detector reads exactly as ``scene`` has them (an unreadable
    cell counts as wrong): graded credit for RL on drawing; 1.0 iff ``detect(image) == scene``."""
    return sum(o == scene.at(c) for c, o in enumerate(read_cells(image))) / 4


# ---------------------------------------------------------------------------------------------
# Questions with exact answers (understanding) and prompts (generation)

QUESTION_KINDS = ("count", "count_colour", "count_shape", "colour_at", "shape_at")


def question(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """(question, exact answer) about ``scene``."""
    kind = rng.choice(QUESTION_KINDS)
    if kind == "count":
        return "how many shapes?", str(len(scene.objects))
    if kind == "count_colour":
        colour = rng.choice(list(COLOURS))
        return f"how many {colour}?", str(sum(o.colour == colour for o in scene.objects))
    if kind == "count_shape":
        shape = rng.choice(SHAPES)
        return f"how many {shape}s?", str(sum(o.shape == shape for o in scene.objects))
    cell = rng.randrange(4)
    obj = scene.at(cell)
    if kind == "colour_at":
        return f"colour {CELLS[cell]}?", obj.colour if obj else "none"
    return f"shape {CELLS[cell]}?", obj.shape if obj else "none"


def generation_prompt(scene: Scene) -> str:
    return "draw " + scene.caption()
