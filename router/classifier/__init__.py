"""Prompt classifier: per-scenario probabilities from hashed word n-grams and a linear model.

The scenarios are the ones that break image models (typography, counting, composition,
anatomy; reflection has no labelled data and comes from a lexicon, see :mod:`pixelroute.router.features`).
The weights ship inside the package as JSON (``model.json``): sparse ``{bucket: [w per class]}``
rows, no pickle. They are trained by ``python -m pixelroute.router.classifier.train --shared DIR``,
reproducibly from the public prompt sets in ``DIR/data/prompts`` (docs/classifier.md, with the held-out metrics).

Inference is a regex tokenisation, one CRC32 per n-gram and a sum of the matching weight rows.
The serving path (:meth:`PromptClassifier.predict_tokens`, used by :mod:`pixelroute.router.features`) runs on
Python floats over a sparse ``{bucket: row}`` dict: for a ~10-word prompt that is ~17 dictionary
lookups, cheaper than one numpy gather + sum + exp (~7 us). Bucket ids are memoised per token and
a bigram's CRC32 continues its first word's (``crc32(b, crc32(a + " "))`` = ``crc32(a + " " + b)``),
so no bigram string is built. Logits are summed in float64; the previous float32 numpy sum differed
by < 1e-6 in probability (see tests/test_router_core.py), which no feature's meaning depends on.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

#: the classes the linear model predicts, in the column order of the weights
CLASSES: tuple[str, ...] = ("typography", "counting", "composition", "anatomy")
#: hash space; 2**18 keeps collisions rare for ~20k distinct n-grams
N_BUCKETS = 1 << 18
MODEL_PATH = Path(__file__).with_name("model.json")
#: always present: keeps the n-gram set non-empty for an all-punctuation prompt
BIAS_FREE_GRAM = "<bias-free>"
#: the per-token memo is cleared when it grows past this (arbitrary user prompts bring new words)
_MAX_MEMO_TOKENS = 200_000

_TOKEN = re.compile(r"[a-z0-9]+|[\"\u201c\u201d]")


def tokens(prompt: str) -> list[str]:
    """Lower-cased word tokens; a double quote is a token because quoted text signals typography."""
    return ['"' if t in "\"\u201c\u201d" else t for t in _TOKEN.findall(prompt.lower())]


def ngram_buckets(prompt: str) -> np.ndarray:
    """Distinct hashed unigram and bigram ids of ``prompt`` (CRC32 is stable across processes, unlike ``hash``)."""
    toks = tokens(prompt)
    grams = toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]
    grams.append(BIAS_FREE_GRAM)
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
        # the serving path: non-zero rows only (the shipped file has ~8k of 262k) as Python floats
        self._rows: dict[int, tuple[float, ...]] = {
            int(b): tuple(float(v) for v in weights[b]) for b in np.flatnonzero(weights.any(axis=1))}
        self._bias = tuple(float(v) for v in bias)
        self._bias_free_bucket = zlib.crc32(BIAS_FREE_GRAM.encode()) % N_BUCKETS
        #: token -> (its unigram bucket, CRC32 of token + " ", token bytes)
        self._memo: dict[str, tuple[int, int, bytes]] = {}

    @classmethod
    def from_json(cls, path: Path = MODEL_PATH) -> PromptClassifier:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"prompt classifier weights not found at {path}; run `python -m "
                             "pixelroute.router.classifier.train --shared DIR` (docs/classifier.md)") from None
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
        return np.array(self.predict_tokens(tokens(prompt)))

    def _token(self, tok: str) -> tuple[int, int, bytes]:
        memo = self._memo
        if len(memo) >= _MAX_MEMO_TOKENS:
            memo.clear()
        raw = tok.encode()
        crc = zlib.crc32(raw)
        info = memo[tok] = (crc % N_BUCKETS, zlib.crc32(b" ", crc), raw)
        return info

    def predict_tokens(self, toks: Sequence[str]) -> tuple[float, ...]:
        """Probability per class for a prompt given as its :func:`tokens` (the featurizer's fast path).

        The same n-gram set as :func:`ngram_buckets` (unigrams, bigrams, the bias-free gram; each
        bucket once), summed on Python floats.
        """
        memo = self._memo
        buckets = {self._bias_free_bucket}
        prev_crc = -1
        for tok in toks:
            info = memo.get(tok) or self._token(tok)
            buckets.add(info[0])
            if prev_crc >= 0:
                buckets.add(zlib.crc32(info[2], prev_crc) % N_BUCKETS)
            prev_crc = info[1]
        rows = self._rows
        l0, l1, l2, l3 = self._bias
        for b in buckets:
            row = rows.get(b)
            if row is not None:
                l0 += row[0]
                l1 += row[1]
                l2 += row[2]
                l3 += row[3]
        return tuple(_sigmoid(v) for v in (l0, l1, l2, l3))


def _sigmoid(x: float) -> float:
    # math.exp overflows past ~709; a logit that large is a probability of exactly 0 or 1 anyway
    return 1.0 / (1.0 + math.exp(-x)) if x > -700.0 else 0.0


@lru_cache(maxsize=1)
def default_classifier() -> PromptClassifier:
    """The classifier shipped with the package (loaded once per process)."""
    return PromptClassifier.from_json(MODEL_PATH)
