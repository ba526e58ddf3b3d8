"""Train the shipped prompt classifier from the shared prompt sets (reproducible, deterministic).

Usage::

    python -m pixelroute.router.classifier.train --shared DIR [--out router/classifier/model.json]

``DIR/data/prompts`` holds the public prompt sets below (docs/classifier.md).

Labels (1 positive, 0 negative, -1 unknown and left out of that class's loss):

* PartiPrompts: typography = Challenge "Writing & Symbols"; counting = "Quantity";
  composition = "Properties & Positioning" or "Complex"; anatomy = Category "People".
* T2I-CompBench ``*_train``/``*_val`` files: numeracy -> counting; spatial, 3d_spatial, complex and
  non_spatial -> composition; color/shape/texture -> negatives for typography and counting only.
* GlyphControl SimpleBench and CreativeBench: typography.

Held out: every T2I-CompBench ``*_val`` file and one fifth of the other prompts chosen by a CRC32
of the text, so the split never depends on file order. Prints per-class metrics as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import CLASSES, MODEL_PATH, N_BUCKETS, ngram_buckets

_T2I_LABELS: dict[str, tuple[int, int, int, int]] = {  # typography, counting, composition, anatomy
    "numeracy": (0, 1, -1, -1),
    "spatial": (0, 0, 1, -1),
    "3d_spatial": (0, 0, 1, -1),
    "complex": (0, -1, 1, -1),
    "non_spatial": (0, 0, 1, -1),
    "color": (0, 0, -1, -1),
    "shape": (0, 0, -1, -1),
    "texture": (0, 0, -1, -1),
}
L2 = 1.0
PRUNE_BELOW = 0.05


def load_examples(shared: Path) -> list[tuple[str, tuple[int, ...], bool]]:
    """(prompt, labels, held_out) for every labelled prompt, de-duplicated on the lower-cased text."""
    prompts = shared / "data" / "prompts"
    out: list[tuple[str, tuple[int, ...], bool]] = []
    with (prompts / "partiprompts" / "PartiPrompts.tsv").open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            ch, cat = row["Challenge"], row["Category"]
            labels = (int(ch == "Writing & Symbols"), int(ch == "Quantity"),
                      int(ch in ("Properties & Positioning", "Complex")), int(cat == "People"))
            out.append((row["Prompt"], labels, _hash_holdout(row["Prompt"])))
    for name, labels in _T2I_LABELS.items():
        for split in ("train", "val"):
            for line in (prompts / "t2i-compbench" / f"{name}_{split}.txt").read_text().splitlines():
                if line.strip():
                    out.append((line.strip(), labels, split == "val"))
    for path in sorted((prompts / "glyphcontrol-bench" / "paper").rglob("*.txt")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append((line.strip(), (1, 0, -1, -1), _hash_holdout(line)))
    seen: dict[str, int] = {}
    unique: list[tuple[str, tuple[int, ...], bool]] = []
    for text, row_labels, held in out:
        key = text.lower()
        if key in seen:  # a prompt in both splits counts as held out only, never as training data
            i = seen[key]
            unique[i] = (unique[i][0], unique[i][1], unique[i][2] or held)
            continue
        seen[key] = len(unique)
        unique.append((text, row_labels, held))
    return unique


def _hash_holdout(text: str) -> bool:
    return zlib.crc32(text.lower().encode()) % 5 == 0


def _design(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import sparse

    rows, cols = [], []
    for i, t in enumerate(texts):
        idx = np.unique(ngram_buckets(t))
        rows.append(np.full(len(idx), i))
        cols.append(idx)
    r, c = np.concatenate(rows), np.concatenate(cols)
    x = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(texts), N_BUCKETS))
    return x, r, c


def fit_logistic(x: object, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by L-BFGS; class-balanced ``weights`` per row."""
    from scipy.optimize import minimize

    n_features = x.shape[1]  # type: ignore[attr-defined]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-12
        ll = -np.sum(weights * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
        g = weights * (p - y)
        grad_w = x.T @ g + L2 * w  # type: ignore[attr-defined]
        return float(ll + 0.5 * L2 * w @ w), np.append(grad_w, g.sum())

    res = minimize(loss, np.zeros(n_features + 1), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    return res.x[:-1], float(res.x[-1])


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get average ranks)."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train(shared: Path) -> tuple[dict[str, object], list[dict[str, Any]]]:
    examples = load_examples(shared)
    texts = [e[0] for e in examples]
    labels = np.array([e[1] for e in examples])
    held = np.array([e[2] for e in examples])
    x, _, _ = _design(texts)
    weights = np.zeros((N_BUCKETS, len(CLASSES)))
    bias = np.zeros(len(CLASSES))
    metrics: list[dict[str, Any]] = []
    for k in range(len(CLASSES)):
        known = labels[:, k] >= 0
        tr, te = known & ~held, known & held
        y = labels[tr, k].astype(float)
        # balance the classes so that rare scenarios (91 typography prompts in Parti) still count
        w_row = np.where(y == 1, 0.5 / max(y.mean(), 1e-6), 0.5 / max(1 - y.mean(), 1e-6))
        weights[:, k], bias[k] = fit_logistic(x[tr], y, w_row)
    # prune tiny weights (file size) BEFORE measuring, so the metrics describe the shipped model
    keep = np.abs(weights).max(axis=1) >= PRUNE_BELOW
    weights[~keep] = 0.0
    weights = weights.round(3)
    for k, name in enumerate(CLASSES):
        known = labels[:, k] >= 0
        tr, te = known & ~held, known & held
        y_te = labels[te, k]
        p_te = 1.0 / (1.0 + np.exp(-(x[te] @ weights[:, k] + bias[k])))
        majority = max(y_te.mean(), 1 - y_te.mean())
        metrics.append({"class": name, "train": int(tr.sum()), "held_out": int(te.sum()),
                        "positives_held_out": int(y_te.sum()), "accuracy": float(((p_te >= 0.5) == y_te).mean()),
                        "majority_accuracy": float(majority), "auc": auc(y_te, p_te)})
    doc = {
        "format": "pixelroute.prompt-classifier/1",
        "version": f"hashed-ngram-lr-{zlib.crc32(weights[keep].round(3).tobytes()):08x}",
        "classes": list(CLASSES),
        "n_buckets": N_BUCKETS,
        "features": "presence of hashed lower-cased word unigrams and bigrams (CRC32 mod n_buckets)",
        "bias": [round(float(b), 4) for b in bias],
        "weights": {str(i): [round(float(v), 3) for v in weights[i]] for i in np.flatnonzero(keep)},
        "held_out_metrics": metrics,
    }
    return doc, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, required=True, metavar="DIR",
                        help="a folder whose data/prompts holds the prompt sets (docs/classifier.md)")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args(argv)
    doc, metrics = train(args.shared)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    tmp.replace(args.out)  # never a half-written model file
    print("| class | train | held out (pos) | accuracy | majority | AUC |\n|---|---|---|---|---|---|")
    for m in metrics:
        print(f"| {m['class']} | {m['train']} | {m['held_out']} ({m['positives_held_out']}) | "
              f"{m['accuracy']:.3f} | {m['majority_accuracy']:.3f} | {m['auc']:.3f} |")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB, {len(doc['weights'])} buckets)")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
