"""A structural check of a LightGBM text model, run before LightGBM parses it.

LightGBM's text parser trusts its input. With lightgbm 4.7, a model cut short or spliced aborts
the process (an error raised inside its OpenMP tree loop ends in ``std::terminate``) or reads
past the buffer (SIGSEGV): a tree line without ``=``, an array shorter than ``num_leaves`` says,
``tree_sizes`` that do not land on the trees, a ``parameters:`` section without its end. The
artifact's SHA-256 catches damage to a file training wrote; this check also keeps text whose
hash was recomputed after the damage (a hand-edited manifest) away from that parser, by
verifying what the parser relies on: the header, every tree's place, arrays and shape, and the
closing sections. It accepts what LightGBM writes for the models we train (numerical splits,
no linear trees) and refuses the rest with a ``ValueError`` saying where.
"""

from __future__ import annotations

import json
import re

_FLOAT = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan|infinity)"
_INT = r"[-+]?\d{1,10}"
_FLOATS = re.compile(rf"{_FLOAT}(?: {_FLOAT})*", re.IGNORECASE)
_INTS = re.compile(rf"{_INT}(?: {_INT})*")
#: LightGBM's own limit on ``num_leaves``
MAX_LEAVES = 131072
#: the arrays of a tree with more than one leaf: key, integer values?, one per internal node (else one
#: per leaf)?, required? (LightGBM reads the "fast" ones without counting: a short one reads past its end)
_TREE_ARRAYS: tuple[tuple[str, bool, bool, bool], ...] = (
    ("left_child", True, True, True),
    ("right_child", True, True, True),
    ("split_feature", True, True, True),
    ("threshold", False, True, True),
    ("split_gain", False, True, False),
    ("internal_count", True, True, False),
    ("internal_value", False, True, False),
    ("internal_weight", False, True, False),
    ("decision_type", True, True, False),
    ("leaf_weight", False, False, False),
    ("leaf_count", True, False, False),
)
_HEADER_INTS = ("num_class", "num_tree_per_iteration", "label_index", "max_feature_idx")


def check_model_text(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is a whole LightGBM text model that LightGBM can parse safely."""
    if not text.isascii() or "\x00" in text or "\r" in text:
        raise ValueError("not plain ASCII text with \\n line ends")
    if not text.startswith("tree\n"):
        raise ValueError("does not start like a LightGBM text model (`tree`)")
    first = text.find("\nTree=")
    if first < 0:
        raise ValueError("has no trees")
    header = _key_values(text[: first + 1].splitlines()[1:], "the header")
    for key in _HEADER_INTS:
        if not re.fullmatch(r"\d{1,9}", header.get(key, "")):
            raise ValueError(f"the header's `{key}` is `{header.get(key)!r}`, not a count")
    if header["num_class"] != "1" or header["num_tree_per_iteration"] != "1":
        raise ValueError("is not a single-output model (`num_class` = `num_tree_per_iteration` = 1)")
    n_features = int(header["max_feature_idx"]) + 1
    sizes_text = header.get("tree_sizes", "")
    if not re.fullmatch(r"\d{1,12}(?: \d{1,12})*", sizes_text):
        raise ValueError("the header's `tree_sizes` is missing or not a list of sizes")
    offset = first + 1
    for i, size in enumerate(int(s) for s in sizes_text.split(" ")):
        block_end = offset + size
        title = f"Tree={i}\n"
        if block_end > len(text) or not text.startswith(title, offset):
            raise ValueError(f"tree {i} is not where `tree_sizes` puts it (cut short or spliced)")
        _check_tree(text[offset + len(title): block_end], i, n_features)
        offset = block_end
    if not text.startswith("end of trees\n", offset):
        raise ValueError("`end of trees` is not where `tree_sizes` says the trees end")
    tail = text[offset:]
    start = tail.find("\nparameters:\n")
    end = tail.find("\nend of parameters\n")
    if start < 0 or end < start:
        raise ValueError("the `parameters:` section is missing or not closed (cut short)")
    for line in tail[start + len("\nparameters:\n"): end].split("\n"):
        if line and not (line.startswith("[") and line.endswith("]") and ": " in line):
            raise ValueError(f"the parameters section has a malformed line `{line[:60]!r}`")
    last = tail[end + len("\nend of parameters\n"):].strip("\n").rsplit("\n", 1)[-1]
    if not last.startswith("pandas_categorical:"):
        raise ValueError("the closing `pandas_categorical:` line is missing (cut short)")
    try:
        json.loads(last[len("pandas_categorical:"):])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"the closing `pandas_categorical:` line is not JSON ({exc})") from exc


def _key_values(lines: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq or not key:
            raise ValueError(f"{where} has a line without `key=value`: `{line[:60]!r}`")
        out[key] = value
    return out


def _check_tree(block: str, i: int, n_features: int) -> None:
    where = f"tree {i}"
    body, blank, _ = block.partition("\n\n")
    if not blank:
        raise ValueError(f"{where} does not end with an empty line (cut short)")
    kv = _key_values(body.split("\n"), where)
    n_text = kv.get("num_leaves", "")
    if not re.fullmatch(r"\d{1,6}", n_text) or not 1 <= int(n_text) <= MAX_LEAVES:
        raise ValueError(f"{where} has `num_leaves` `{n_text[:20]!r}`, not a leaf count")
    n = int(n_text)
    if kv.get("num_cat") != "0":
        raise ValueError(f"{where} has categorical splits or no `num_cat` (not supported)")
    if kv.get("is_linear", "0") != "0":
        raise ValueError(f"{where} is a linear tree (not supported)")
    if "shrinkage" in kv and not _FLOATS.fullmatch(kv["shrinkage"]):
        raise ValueError(f"{where} has a malformed `shrinkage`")
    _check_array(kv, "leaf_value", False, n, where, required=True)
    if n == 1:
        return
    values: dict[str, list[int]] = {}
    for key, ints, per_internal, required in _TREE_ARRAYS:
        got = _check_array(kv, key, ints, n - 1 if per_internal else n, where, required)
        if got is not None:
            values[key] = got
    if any(not 0 <= f < n_features for f in values["split_feature"]):
        raise ValueError(f"{where} splits on a feature outside 0..{n_features - 1}")
    if any(not 0 <= d < 128 or d & 1 for d in values.get("decision_type", ())):
        raise ValueError(f"{where} has a categorical split (not supported)")
    _check_shape(values["left_child"], values["right_child"], n, where)


def _check_array(kv: dict[str, str], key: str, ints: bool, count: int, where: str,
                 required: bool) -> list[int] | None:
    if key not in kv:
        if required:
            raise ValueError(f"{where} has no `{key}`")
        return None
    text = kv[key]
    if not (_INTS if ints else _FLOATS).fullmatch(text) or text.count(" ") + 1 != count:
        raise ValueError(f"{where} has a `{key}` that is not {count} {'integers' if ints else 'numbers'}")
    if not ints:
        return None
    return [int(v) for v in text.split(" ")]


def _check_shape(left: list[int], right: list[int], n: int, where: str) -> None:
    """Child ids must make one binary tree: node ``k >= 0`` is internal, ``-1 - j`` is leaf ``j``."""
    seen_nodes = [False] * (n - 1)
    seen_leaves = [False] * n
    for child in (*left, *right):
        if child >= 0:
            if not 0 < child < n - 1 or seen_nodes[child]:
                raise ValueError(f"{where} has a malformed tree (node {child} misplaced)")
            seen_nodes[child] = True
        else:
            leaf = -1 - child
            if leaf >= n or seen_leaves[leaf]:
                raise ValueError(f"{where} has a malformed tree (leaf {leaf} misplaced)")
            seen_leaves[leaf] = True
    # every node has one parent; walking from the root must reach them all (no detached cycle)
    reached, stack = 0, [0]
    while stack:
        node = stack.pop()
        reached += 1
        stack.extend(c for c in (left[node], right[node]) if c >= 0)
        if reached > n - 1:
            break
    if reached != n - 1:
        raise ValueError(f"{where} has a malformed tree (nodes unreachable from the root)")
