"""scikit-learn's bundled 8x8 handwritten digits (``load_digits``: 1,797 images, no download) as
the small real image set, and a digit classifier trained here that checks generated digits.

Each 8x8 image (grey levels 0-16) is shown to the models as a 32x32 RGB image (every pixel a 4x4
block, white on black), the same format as the scenes, so one VQ tokenizer and one encoder serve
both. The split is a hash bucket of the image's index in the data set (20% held out); the
understanding question is "which digit?" and the generation prompt "draw digit 7". There are
only ten generation prompts, so generation is evaluated on all ten and checked by the classifier
(logistic regression on the 8x8 grey levels, trained on the train split here; its held-out
accuracy is reported beside every generation accuracy it judges).
"""

from __future__ import annotations

import functools
import random

import numpy as np

from r1lab.tasks.base import Split, stable_hash

SCALE = 4
"pixels per digit pixel: 8x8 -> 32x32"
TEST_PERCENT = 20


@functools.lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) in [0, 1], labels (N,)) of ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits  # ships with scikit-learn; imported only when used

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def split_of(index: int) -> Split:
    return "test" if stable_hash(f"digit:{index}") % 100 < TEST_PERCENT else "train"


@functools.lru_cache(maxsize=2)
def indices(split: Split) -> tuple[int, ...]:
    return tuple(i for i in range(len(dataset()[1])) if split_of(i) == split)


def to_rgb(img8: np.ndarray) -> np.ndarray:
    """(8, 8) grey in [0, 1] -> (3, 32, 32) float32."""
    big = np.kron(np.asarray(img8, dtype=np.float32), np.ones((SCALE, SCALE), dtype=np.float32))
    return np.repeat(big[None], 3, axis=0)


def to_grey8(image: np.ndarray) -> np.ndarray:
    """(3, 32, 32) -> (8, 8): channel mean, then 4x4 average pooling (the classifier's input)."""
    g = np.asarray(image, dtype=np.float32).reshape(3, 8 * SCALE, 8 * SCALE).mean(0)
    return g.reshape(8, SCALE, 8, SCALE).mean(axis=(1, 3))


def sample(rng: random.Random, split: Split) -> tuple[np.ndarray, int]:
    """(image (3, 32, 32), label) of a random digit of ``split``."""
    images, labels = dataset()
    i = rng.choice(indices(split))
    return to_rgb(images[i]), int(labels[i])


QUESTION = "which digit?"


def generation_prompt(label: int) -> str:
    return f"draw digit {label}"


class DigitClassifier:
    """Multinomial logistic regression on the 8x8 grey levels (scikit-learn, deterministic lbfgs),
    trained on the train split; ``accuracy`` is its held-out accuracy on the test split."""

    def __init__(self) -> None:
        from sklearn.linear_model import LogisticRegression

        images, labels = dataset()
        tr, te = list(indices("train")), list(indices("test"))
        self.clf = LogisticRegression(max_iter=2000, C=1.0)
        self.clf.fit(images[tr].reshape(len(tr), 64), labels[tr])
        self.accuracy = float((self.clf.predict(images[te].reshape(len(te), 64)) == labels[te]).mean())

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels of (N, 3, 32, 32) images."""
        x = np.stack([to_grey8(im).reshape(64) for im in images])
        return self.clf.predict(x)


@functools.lru_cache(maxsize=1)
def classifier() -> DigitClassifier:
    return DigitClassifier()
