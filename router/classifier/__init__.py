"""Prompt classifier: per-scenario probabilities from hashed word n-grams and a linear model.

The scenarios are the ones that break image models (typography, counting, composition,
anatomy; reflection has no labelled data and comes from a lexicon, see :mod:`router.features`).
The weights ship inside the package as JSON (``model.json``): sparse ``{bucket: [w per class]}``
rows, no pickle. They are trained by ``python -m router.classifier.train --shared ../shared``,
which is reproducible from the shared prompt sets; held-out metrics are in docs/classifier.md.

Inference is a regex tokenisation, one CRC32 per n-gram and one row gather: a few microseconds.
"""

from __future__ import annotations

import json
import re
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

#: the classes the linear model predicts, in the column order of the weights
CLASSES: tuple[str, ...] = ("typography", "counting", "composition", "anatomy")
#: hash space; 2**18 keeps collisions rare for ~20k distinct n-grams
N_BUCKETS = 1 << 18
MODEL_PATH = Path(__file__).with_name("model.json")

_TOKEN = re.compile(r"[a-z0-9]+|[\"\u201c\u201d]")


def tokens(prompt: str) -> list[str]:
    """Lower-cased word tokens; a double quote is a token because quoted text signals typography."""
    return ['"' if t in "\"\u201c\u201d" else t for t in _TOKEN.findall(prompt.lower())]


def ngram_buckets(prompt: str) -> np.ndarray:
    """Distinct hashed unigram and bigram ids of ``prompt`` (CRC32 is stable across processes, unlike ``hash``)."""
    toks = tokens(prompt)
    grams = toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]
    grams.append("<bias-free>")  # keeps the array non-empty for an all-punctuation prompt
    # presence, not counts: a set drops repeated n-grams; sorted, because set order follows the
    # per-process string hash and float32 sums in a different order differ in the last bits
    ids = sorted({zlib.crc32(g.encode()) % N_BUCKETS for g in grams})
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


class PromptClassifier:
    """A fitted linear model over hashed n-grams; ``predict(prompt)`` -> probabilities per class."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, version: str) -> None:
        if weights.shape != (N_BUCKETS, len(CLASSES)):
            raise ValueError(f"classifier weights must have shape {(N_BUCKETS, len(CLASSES))} but have {weights.shape}")
        self.weights_ = weights
        self.bias_ = bias
        self.version = version

    @classmethod
    def from_json(cls, path: Path = MODEL_PATH) -> PromptClassifier:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"prompt classifier weights not found at {path}; "
                             "run `python -m router.classifier.train --shared ../shared`") from None
        if list(doc["classes"]) != list(CLASSES) or int(doc["n_buckets"]) != N_BUCKETS:
            raise ValueError(f"classifier file {path} was built for classes {doc['classes']} and "
                             f"{doc['n_buckets']} buckets, expected {list(CLASSES)} and {N_BUCKETS}")
        weights = np.zeros((N_BUCKETS, len(CLASSES)), dtype=np.float32)
        for bucket, row in doc["weights"].items():
            weights[int(bucket)] = row
        return cls(weights, np.asarray(doc["bias"], dtype=np.float32), str(doc["version"]))

    def logits(self, prompt: str) -> np.ndarray:
        out: np.ndarray = self.weights_[ngram_buckets(prompt)].sum(axis=0) + self.bias_
        return out

    def predict(self, prompt: str) -> np.ndarray:
        """Probability per class in :data:`CLASSES` order."""
        out: np.ndarray = 1.0 / (1.0 + np.exp(-self.logits(prompt)))
        return out


@lru_cache(maxsize=1)
def default_classifier() -> PromptClassifier:
    """The classifier shipped with the package (loaded once per process)."""
    return PromptClassifier.from_json(MODEL_PATH)
