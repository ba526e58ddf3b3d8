"""The one featurizer: the SAME code builds feature rows at serve time and at training time.

A row describes one candidate (a backend and, for local pipelines, a step count) for one
request. Three blocks, in this order (see :data:`FEATURE_NAMES`):

* prompt signals, computed once per prompt and cached: lengths vs the 77-token CLIP window,
  typography (quoted text, "a sign that says"), counting (numerals, number words, plurals),
  composition (conjunctions, spatial relations, occlusion), reflective surfaces, anatomy,
  negation, style words, and the prompt classifier's probability per scenario;
* the request as this candidate would run it: megapixels, aspect ratio, effective steps and
  guidance, images, negative prompt, fixed seed, and the operation: whether it is an edit, its
  strength (1 for a generation, which starts from pure noise) and whether a mask limits it, so
  that edit latency and correction are learnt apart from generation's;
* the backend and live context: backend code (index among the backends a model was trained
  on), local/remote, price, prior latency, declared strengths, in-flight, queue depth, breaker
  state, recent failure rate, cold (a local pipeline not yet in memory), and the log of the
  recent latency ratio (observed / expected over the client's recent attempts: drift).

:func:`schema_hash` changes whenever names, order or meaning change; a trained artifact
records it and :meth:`pixelroute.router.Router.load` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import _priors
from ._types import LATENCY_RATIO_RANGE, BackendProfile, BackendState, RouteContext, RouteRequest
from .classifier import default_classifier

#: bump when a feature's meaning changes without its name changing
SCHEMA_VERSION = "pixelroute.features/5"
SCENARIOS: tuple[str, ...] = ("typography", "counting", "composition", "reflection", "anatomy")
#: CLIP's text encoder sees 77 tokens; longer prompts lose their tail in SD-family models
CLIP_WINDOW = 77

_QUOTED = re.compile(r"[\"\u201c][^\"\u201d]{1,80}[\"\u201d]")
_NUMERAL = re.compile(r"\d+")
#: multi-word cues only; single words go through one dictionary lookup per word (much faster than
#: a dozen alternation regexes: ~10 us instead of ~70 us per prompt)
_PHRASES = re.compile(r"\b(?:in front of|next to|on top of|left of|right of|on the left|on the right|"
                      r"half[- ]hidden|digital art|concept art|pixel art)\b")
_PHRASE_LEXICON = {"in front of": "spatial", "next to": "spatial", "on top of": "spatial", "left of": "spatial",
                   "right of": "spatial", "on the left": "spatial", "on the right": "spatial",
                   "half hidden": "occlusion", "half-hidden": "occlusion", "digital art": "style",
                   "concept art": "style", "pixel art": "style"}
_LEXICON_WORDS = {
    "text": "says sign signs saying read reads reading written write writes text word words letter letters "
            "lettering logo typography caption title label labeled labelled spell spells spelled spelling font",
    "number": "two three four five six seven eight nine ten eleven twelve twenty dozen several many multiple "
              "few pair couple both triple quadruple",
    "conj": "and with while plus alongside",
    "spatial": "behind beneath below above under underneath between beside near inside atop facing opposite "
               "surrounding around",
    "occlusion": "partially partly hidden occluded occluding occlusion obscured covered peeking overlapping tucked",
    "reflective": "chrome glass glossy shiny metallic water lake puddle transparent translucent crystal window "
                  "polished wet",
    "anatomy": "hand hands finger fingers face faces eyes portrait person people man woman men women child "
               "children kid girl boy crowd group team family feet leg legs arm arms",
    "negation": "no not without never none nothing neither nor isn't aren't doesn't",
    "style": "painting watercolor watercolour oil sketch drawing illustration anime cartoon style render "
             "abstract cinematic vintage 3d",
}
_LEXICON = {w: cat for cat, words in _LEXICON_WORDS.items() for w in words.split()}
_PREFIXES = (("mirror", "reflective"), ("reflect", "reflective"), ("occlud", "occlusion"),
             ("dancer", "anatomy"), ("athlete", "anatomy"), ("impressionis", "style"), ("surreal", "style"),
             ("minimalis", "style"), ("photo", "style"))
_EXCEPTIONS = frozenset({"glass", "grass", "dress", "chess", "bus", "this", "is", "was", "has", "its", "as",
                         "always", "across", "does", "less", "press", "princess", "boss", "cactus", "lens"})

PROMPT_FEATURES: tuple[str, ...] = (
    "prompt_chars", "prompt_words", "prompt_tokens_est", "prompt_over_clip_window",
    "quoted_spans", "text_words", "numerals", "number_words", "plural_nouns",
    "conjunctions", "spatial_relations", "occlusion_words", "reflective_words", "anatomy_words",
    "negations", "style_words", "has_negative_prompt",
    *(f"p_{s}" for s in SCENARIOS),
)
REQUEST_FEATURES: tuple[str, ...] = (
    "megapixels", "log_aspect", "steps", "steps_ratio", "guidance", "n_images", "fixed_seed",
    "edit", "edit_strength", "edit_masked",
)
#: an edit's strength when the request leaves it to the backend: diffusers' defaults (img2img 0.8,
#: inpainting 1.0), which the SDK's local backend applies too
DEFAULT_EDIT_STRENGTH = 0.8
DEFAULT_MASKED_EDIT_STRENGTH = 1.0
BACKEND_FEATURES: tuple[str, ...] = (
    "backend_code", "local", "log_price_usd", "log_prior_latency_s",
    *(f"strength_{s}" for s in SCENARIOS),
    "in_flight", "queue_depth", "breaker", "recent_failure_rate", "cold", "recent_latency_log_ratio",
)
#: the cold-start prior's own predictions. They are features (trees can split on them) AND the
#: models' starting point: every LightGBM target is fitted on top of the matching column
#: (``init_score``) and the column is added back at serve time, so with little data a trained
#: router predicts what the cold-start router predicts, and trees only learn where logs disagree
PRIOR_FEATURES: tuple[str, ...] = ("prior_log_p50_s", "prior_sigma", "prior_logit_fail", "prior_correction_s")
FEATURE_NAMES: tuple[str, ...] = PROMPT_FEATURES + REQUEST_FEATURES + BACKEND_FEATURES + PRIOR_FEATURES
N_PROMPT = len(PROMPT_FEATURES)
N_FEATURES = len(FEATURE_NAMES)
_P_START = PROMPT_FEATURES.index("p_typography")
_R0 = N_PROMPT  # first request column
_B0 = N_PROMPT + len(REQUEST_FEATURES)  # first backend column
_S0 = _B0 + BACKEND_FEATURES.index("strength_typography")
_C0 = _B0 + BACKEND_FEATURES.index("in_flight")
COL_PRIOR_LOG_P50 = FEATURE_NAMES.index("prior_log_p50_s")
COL_PRIOR_SIGMA = FEATURE_NAMES.index("prior_sigma")
COL_PRIOR_LOGIT_FAIL = FEATURE_NAMES.index("prior_logit_fail")
COL_PRIOR_CORRECTION = FEATURE_NAMES.index("prior_correction_s")
COL_RECENT_LOG_RATIO = FEATURE_NAMES.index("recent_latency_log_ratio")
#: live-context columns per row (see :meth:`OptionTable.context_block`)
N_CONTEXT = 6
# featurize_table writes in_flight .. prior_logit_fail as one block: they must stay contiguous
assert FEATURE_NAMES[_C0:COL_PRIOR_LOGIT_FAIL + 1] == ("in_flight", "queue_depth", "breaker", "recent_failure_rate",
                                                       "cold", "recent_latency_log_ratio",
                                                       "prior_log_p50_s", "prior_sigma", "prior_logit_fail")
_BREAKER = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
_RATIO_LO, _RATIO_HI = LATENCY_RATIO_RANGE
#: P(fail) priors are clipped to this range so that their logit is finite
_FAIL_CLIP = (1e-4, 0.99)


def schema_hash() -> str:
    """Hash of the feature schema (names, order, version, classifier); artifacts are tied to it."""
    text = "|".join((SCHEMA_VERSION, default_classifier().version, *FEATURE_NAMES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: one pass finds the featurizer's words AND the classifier's tokens: a word with an apostrophe
#: ("isn't") is one word here and its pieces ("isn", "t") for the classifier; a double quote is a
#: classifier token only (see :func:`pixelroute.router.classifier.tokens`, which a test keeps equal)
_TOKEN = re.compile(r"[a-z0-9']+|[\"\u201c\u201d]")
_QUOTE_CHARS = frozenset("\"\u201c\u201d")
#: every phrase of _PHRASES contains one of these: most prompts skip that regex altogether
_PHRASE_TRIGGERS = ("front", "next", "top", "left", "right", "hidden", "art")
_CATEGORIES: tuple[str, ...] = tuple(_LEXICON_WORDS)
_CAT_INDEX = {c: i for i, c in enumerate(_CATEGORIES)}
_QUOTE_INFO: tuple[int, bool, tuple[str, ...]] = (-1, False, ('"',))
#: token -> (lexicon category index or -1, counts as a plural noun, classifier tokens); bounded
_WORD_INFO: dict[str, tuple[int, bool, tuple[str, ...]]] = {}
_MAX_WORD_INFO = 200_000


def _word_info(w: str) -> tuple[int, bool, tuple[str, ...]]:
    """What one word contributes (memoised: prompts reuse words, and this is the per-word Python work)."""
    if len(_WORD_INFO) >= _MAX_WORD_INFO:
        _WORD_INFO.clear()
    if w in _QUOTE_CHARS:
        info = _QUOTE_INFO
    else:
        cat = _LEXICON.get(w)
        if cat is None and len(w) > 5:
            cat = next((c for prefix, c in _PREFIXES if w.startswith(prefix)), None)
        plural = len(w) > 3 and w[-1] == "s" and w[-2] not in "sui'" and w not in _EXCEPTIONS
        pieces = tuple(t for t in w.split("'") if t) if "'" in w else (w,)
        info = (-1 if cat is None else _CAT_INDEX[cat], plural, pieces)
    _WORD_INFO[w] = info
    return info


@lru_cache(maxsize=8192)
def prompt_vector(prompt: str, has_negative_prompt: bool = False) -> np.ndarray:
    """The prompt block (read-only array). Cached: the SDK re-decides with the same prompt on fallback.

    One regex pass and one memoised lookup per word feed both the lexicon counts and the n-gram
    classifier (~10 us for a new prompt; it was ~25 us with separate passes and numpy).
    """
    lower = prompt.lower()
    counts = [0] * len(_CATEGORIES)
    plurals = n_words = 0
    clf_tokens: list[str] = []
    get = _WORD_INFO.get
    for w in _TOKEN.findall(lower):
        info = get(w) or _word_info(w)
        cat, plural, pieces = info
        if info is not _QUOTE_INFO:
            n_words += 1
            if cat >= 0:
                counts[cat] += 1
            plurals += plural
        clf_tokens += pieces
    if any(t in lower for t in _PHRASE_TRIGGERS):
        for phrase in _PHRASES.findall(lower):
            counts[_CAT_INDEX[_PHRASE_LEXICON[phrase]]] += 1
    text, number, conj, spatial, occlusion, reflective, anatomy, negation, style = counts
    conj += prompt.count(",")
    # CLIP BPE splits rare words and punctuation: ~1.3 tokens per word is a good cheap estimate
    tokens_est = 1.3 * n_words + prompt.count(",") + prompt.count(".") + 2
    p_typography, p_counting, p_composition, p_anatomy = default_classifier().predict_tokens(clf_tokens)
    # reflection has no labelled prompt set: a saturating lexicon score stands in for a probability
    p_reflection = 1.0 - math.exp(-0.8 * reflective)
    vec = np.array([
        len(prompt), n_words, tokens_est, float(tokens_est > CLIP_WINDOW),
        len(_QUOTED.findall(prompt)), text, len(_NUMERAL.findall(lower)), number, plurals,
        conj, spatial, occlusion, reflective, anatomy, negation, style, float(has_negative_prompt),
        p_typography, p_counting, p_composition, p_reflection, p_anatomy,
    ], dtype=np.float64)
    vec.setflags(write=False)
    return vec


def scenario_probabilities(prompt: str) -> dict[str, float]:
    """Per-scenario probability for ``prompt`` (classifier, plus the reflection lexicon)."""
    vec = prompt_vector(prompt)
    start = PROMPT_FEATURES.index("p_typography")
    return {s: float(vec[start + i]) for i, s in enumerate(SCENARIOS)}


class OptionTable:
    """What a list of (profile, step option) contributes to feature rows independently of the request,
    as arrays, so that a decision computes every candidate's row in a handful of numpy operations.

    Built once per list of profiles (see :func:`option_table`); the per-request part lives in
    :func:`feature_rows`. The formulas are the vectorised form of :mod:`pixelroute.router._priors` (a test
    checks them equal).
    """

    def __init__(self, options: Sequence[tuple[BackendProfile, int | None]]) -> None:
        self.options = list(options)
        profiles = [p for p, _ in self.options]
        presets = [_priors.preset(p) for p in profiles]
        self.names = [p.name for p in profiles]
        n = len(profiles)

        def arr(values: Sequence[float]) -> np.ndarray:
            return np.array(values, dtype=np.float64).reshape(n)

        self.local = arr([float(p.local) for p in profiles])
        self.is_local = self.local > 0
        self.default_w = arr([p.default_width for p in profiles])
        self.default_h = arr([p.default_height for p in profiles])
        self.ref_mp = self.default_w * self.default_h / 1e6
        self.default_steps = arr([_priors.default_steps(p) or 0 for p in profiles])
        self.option_steps = arr([s or 0 for _, s in self.options])
        self.supports_steps = np.array([p.supports_steps for p in profiles], dtype=bool)
        self.base_latency = arr([p.typical_latency_s or k.latency_s for p, k in zip(profiles, presets, strict=True)])
        # one price model per profile, with _priors.price_usd's precedence
        self.price_image = arr([float(p.price.get("per_image", 0.0)) for p in profiles])
        self.price_mp = arr([0.0 if "per_image" in p.price else float(p.price.get("per_megapixel", 0.0))
                             for p in profiles])
        self.price_gpu = arr([0.0 if ("per_image" in p.price or "per_megapixel" in p.price)
                              else float(p.price.get("per_gpu_second", 0.0)) for p in profiles])
        self.default_guidance = arr([p.default_guidance or 0.0 for p in profiles])
        self.strengths = np.array([[p.strengths.get(s, _priors.DEFAULT_STRENGTH) for s in SCENARIOS]
                                   for p in profiles], dtype=np.float64).reshape(n, len(SCENARIOS))
        fix = np.array([_priors.SCENARIO_FIX_S[s] for s in SCENARIOS])
        self.risk_weights = (1.0 - self.strengths) * fix
        self.sigma = arr([k.sigma for k in presets])
        self.prior_fail = arr([p.typical_failure_rate if p.typical_failure_rate is not None else k.failure_rate
                               for p, k in zip(profiles, presets, strict=True)])
        self.local_list = [bool(p.local) for p in profiles]
        self.prior_fail_list = self.prior_fail.tolist()
        self.fail_logit_list = [math.log(f / (1.0 - f)) for f in np.clip(self.prior_fail, *_FAIL_CLIP).tolist()]
        self.sigma_list = self.sigma.tolist()
        # a cold local pipeline adds its load time (declared, else the kind's preset) and that time's
        # spread; remote backends have nothing to load
        self.load_s = arr([(p.typical_load_s if p.typical_load_s is not None else k.load_s) if p.local else 0.0
                           for p, k in zip(profiles, presets, strict=True)])
        self.load_list = self.load_s.tolist()
        self.cold_sigma = np.maximum(self.sigma, _priors.COLD_SIGMA)
        self.cold_sigma_list = self.cold_sigma.tolist()
        self._codes: tuple[dict[str, int] | None, np.ndarray] = (None, np.full(n, -1.0))
        self.no_load = np.zeros((n, N_CONTEXT))
        #: request shape -> :class:`_Template`; see :func:`featurize`
        self.templates: dict[tuple[object, ...], _Template] = {}

    def __len__(self) -> int:
        return len(self.options)

    def codes(self, backend_codes: dict[str, int] | None) -> np.ndarray:
        """``backend_code`` column (index among a model's backends, -1 unknown); memoised per dict."""
        cached_for, col = self._codes
        if backend_codes is cached_for:
            return col
        col = np.array([float((backend_codes or {}).get(name, -1)) for name in self.names])
        self._codes = (backend_codes, col)
        return col

    def context_block(self, context: RouteContext) -> np.ndarray:
        """The :data:`N_CONTEXT` live-context columns per option (``in_flight .. recent_latency_log_ratio``)."""
        return np.array([row[:N_CONTEXT] for row in self.live_tail(context, [0.0] * len(self.names))]
                        ).reshape(-1, N_CONTEXT)

    def live_tail(self, context: RouteContext, log_latency: Sequence[float]) -> list[tuple[float, ...]]:
        """Per option, the 9 contiguous columns ``in_flight .. prior_logit_fail``: the 6 context columns,
        the latency prior (``log_latency`` + log of the load factor, plus the load time when cold, times
        the recent latency ratio), sigma and the logit of the P(fail) prior. The serving twin of
        :func:`_fill_context` on Python floats (for ~10 options one numpy call costs more than the whole
        loop); a test keeps the two equal."""
        out: list[tuple[float, ...]] = []
        get = context.backends.get
        default = context.default
        lo, hi = _FAIL_CLIP
        q_local, q_remote = _priors.QUEUE_FACTOR_LOCAL, _priors.INFLIGHT_FACTOR_REMOTE
        for i, name in enumerate(self.names):
            st = get(name) or default
            log_lat, sigma, fail_logit = log_latency[i], self.sigma_list[i], self.fail_logit_list[i]
            if st is None:
                out.append((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, log_lat, sigma, fail_logit))
                continue
            in_flight, queue, recent = float(st.in_flight), float(st.queue_depth), st.recent_failure_rate
            breaker = _BREAKER.get(st.breaker, 0.0)
            if in_flight or queue:  # log(1) = 0: an idle backend keeps the template's prior exactly
                log_lat += math.log((1.0 + q_local * (queue + in_flight)) if self.local_list[i] else
                                    (1.0 + q_remote * in_flight))
            cold = 0.0
            if not st.loaded and self.local_list[i]:
                cold = 1.0
                log_lat = math.log(math.exp(log_lat) + self.load_list[i])
                sigma = self.cold_sigma_list[i]
            log_ratio = _log_ratio(st.recent_latency_ratio)
            log_lat += log_ratio
            if recent > 0 or breaker == 0.5:
                declared = self.prior_fail_list[i]
                fail = (0.5 * (declared + recent) if recent > 0 else declared) + (0.1 if breaker == 0.5 else 0.0)
                fail = lo if fail < lo else hi if fail > hi else fail
                fail_logit = math.log(fail / (1.0 - fail))
            out.append((in_flight, queue, breaker, recent, cold, log_ratio, log_lat, sigma, fail_logit))
        return out


def context_columns(state: BackendState) -> tuple[float, float, float, float, float, float]:
    """One backend state as the :data:`N_CONTEXT` raw context columns (training's per-record form;
    :meth:`OptionTable.live_tail` computes the same numbers per option at serving time)."""
    return (float(state.in_flight), float(state.queue_depth), _BREAKER.get(state.breaker, 0.0),
            float(state.recent_failure_rate), 0.0 if state.loaded else 1.0, _log_ratio(state.recent_latency_ratio))


def _log_ratio(ratio: float) -> float:
    """The ``recent_latency_log_ratio`` column: log of the ratio clipped to its range (1.0 -> exactly 0)."""
    return 0.0 if ratio == 1.0 else math.log(min(max(ratio, _RATIO_LO), _RATIO_HI))


class _Template(NamedTuple):
    """What a request's shape (size, images, steps, guidance, seed) fixes for one option table."""

    codes: dict[str, int] | None
    #: request, backend and prior columns with no load; the prompt columns are filled per request
    rows: np.ndarray
    price: np.ndarray
    penalty: np.ndarray
    #: penalty is 1 everywhere (no option runs fewer steps than its default): skip the multiply
    unit_penalty: bool
    #: ``log_prior_latency_s`` per option as Python floats (the latency prior before load)
    log_latency: list[float]


#: tables by the identity of the profiles they were built from (the table keeps them alive, so an id
#: is never reused while its entry exists)
_TABLES: dict[tuple[tuple[int, int | None], ...], OptionTable] = {}
_MAX_TABLES = 256
_MAX_TEMPLATES = 512


def option_table(options: Sequence[tuple[BackendProfile, int | None]]) -> OptionTable:
    """The cached :class:`OptionTable` of ``options`` (profiles are compared by identity)."""
    key = tuple((id(p), s) for p, s in options)
    table = _TABLES.get(key)
    if table is None or any(a is not b for (a, _), (b, _) in zip(table.options, options, strict=True)):
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        table = _TABLES[key] = OptionTable(options)
    return table


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


def feature_rows(
    table: OptionTable,
    idx: np.ndarray | None,
    prompt_block: np.ndarray,
    width: np.ndarray | float,
    height: np.ndarray | float,
    n_images: np.ndarray | float,
    steps: np.ndarray | float,
    guidance: np.ndarray | float,
    fixed_seed: np.ndarray | float,
    context: np.ndarray,
    codes: np.ndarray,
    *,
    edit: np.ndarray | float,
    strength: np.ndarray | float,
    masked: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and prices, vectorised: THE featurizer for serving and training alike.

    Row ``j`` describes option ``idx[j]`` of ``table`` (``idx=None``: every option once, in order)
    for a request given by the other arguments, each an array over rows or one value for all;
    NaN stands for "not set" (``width``, ``height``, ``steps``, ``guidance``, ``strength``).
    ``prompt_block`` is ``(rows, N_PROMPT)`` or one prompt's vector; ``context`` is
    ``(rows, N_CONTEXT)`` (see :meth:`OptionTable.context_block`); ``codes`` the backend code per
    row; ``edit`` and ``masked`` are 1.0 or 0.0 (see :func:`operation_columns`).
    """
    rows, price, penalty = _request_rows(table, idx, width, height, n_images, steps, guidance, fixed_seed, codes,
                                         edit, strength, masked)
    _fill_prompt(rows, table, idx, prompt_block, penalty)
    _fill_context(rows, table, idx, context)
    return rows, price


def operation_columns(request: RouteRequest) -> tuple[float, float, float]:
    """``edit``, ``strength`` (NaN: the backend's default) and ``masked`` of one request, as floats."""
    if request.operation != "edit":
        return 0.0, 1.0, 0.0
    return 1.0, _nan_if_none(request.strength), float(request.masked)


def _request_rows(table: OptionTable, idx: np.ndarray | None, width: np.ndarray | float,
                  height: np.ndarray | float, n_images: np.ndarray | float, steps: np.ndarray | float,
                  guidance: np.ndarray | float, fixed_seed: np.ndarray | float, codes: np.ndarray,
                  edit: np.ndarray | float, strength: np.ndarray | float, masked: np.ndarray | float,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with the request and backend columns filled (prompt and context columns left for later),
    the price and the correction prior's step penalty. Depends on the request's shape, not its prompt."""
    def at(a: np.ndarray) -> np.ndarray:
        return a if idx is None else a[idx]

    m = len(table) if idx is None else len(idx)
    rows = np.empty((m, N_FEATURES))
    w = np.where(np.isnan(width), at(table.default_w), width)
    h = np.where(np.isnan(height), at(table.default_h), height)
    mp = w * h / 1e6
    option, d_steps = at(table.option_steps), at(table.default_steps)
    # a step option, else the caller's steps where the backend takes them, else the backend default
    asked = ~np.isnan(steps) & at(table.supports_steps)
    eff = np.where(option > 0, option, np.where(asked, np.nan_to_num(steps), d_steps))
    has_both = (eff > 0) & (d_steps > 0)
    d_safe, eff_safe = np.where(d_steps > 0, d_steps, 1.0), np.where(eff > 0, eff, 1.0)
    ratio = np.where(has_both, eff_safe / d_safe, 1.0)
    local = at(table.is_local)
    mp_ratio = mp / at(table.ref_mp)
    # an unset edit strength is the backend's default; a local pipeline denoises strength x steps
    eff_strength = np.where(np.isnan(strength), np.where(np.asarray(masked) > 0, DEFAULT_MASKED_EDIT_STRENGTH,
                                                         DEFAULT_EDIT_STRENGTH), strength)
    denoised = np.where(np.asarray(edit) > 0, eff_strength, 1.0)
    lat = at(table.base_latency) * np.where(local, mp_ratio * ratio * denoised * n_images,
                                            np.sqrt(mp_ratio) * (1.0 + 0.25 * (n_images - 1.0)))
    price = (at(table.price_image) + at(table.price_mp) * mp) * n_images + at(table.price_gpu) * lat
    rows[:, _R0] = mp
    rows[:, _R0 + 1] = np.log(w / h)
    rows[:, _R0 + 2] = eff
    rows[:, _R0 + 3] = ratio
    rows[:, _R0 + 4] = np.where(np.isnan(guidance), at(table.default_guidance), guidance)
    rows[:, _R0 + 5] = n_images
    rows[:, _R0 + 6] = fixed_seed
    rows[:, _R0 + 7] = edit
    rows[:, _R0 + 8] = np.where(np.asarray(edit) > 0, eff_strength, 1.0)
    rows[:, _R0 + 9] = masked
    rows[:, _B0] = codes
    rows[:, _B0 + 1] = at(table.local)
    rows[:, _B0 + 2] = np.log(price + 1e-4)
    rows[:, _B0 + 3] = np.log(lat)
    rows[:, _S0:_S0 + len(SCENARIOS)] = at(table.strengths)
    rows[:, COL_PRIOR_SIGMA] = at(table.sigma)
    # fewer denoising steps than the default leave more defects to fix (square-root penalty)
    penalty = np.where(has_both & (eff < d_steps), np.sqrt(d_safe / eff_safe), 1.0)
    return rows, price, penalty


def _fill_prompt(rows: np.ndarray, table: OptionTable, idx: np.ndarray | None, prompt_block: np.ndarray,
                 penalty: np.ndarray) -> None:
    """The prompt columns and the cold-start correction prior (declared strengths x scenario probabilities)."""
    rows[:, :N_PROMPT] = prompt_block
    scenario_p = prompt_block[..., _P_START:N_PROMPT]
    risk = (table.risk_weights @ scenario_p) if (idx is None and scenario_p.ndim == 1) else \
        (table.risk_weights[idx] * scenario_p).sum(axis=1)
    rows[:, COL_PRIOR_CORRECTION] = _priors.BASE_CORRECTION_S + penalty * risk


def _fill_context(rows: np.ndarray, table: OptionTable, idx: np.ndarray | None, context: np.ndarray) -> None:
    """The live-context columns and the latency and P(fail) priors, which depend on them."""
    # a cold flag only means something for a local pipeline (remote backends have nothing to load)
    local = table.is_local if idx is None else table.is_local[idx]
    context = context.copy()
    context[:, 4] = np.where(local, context[:, 4], 0.0)
    context[:, 5] = np.clip(context[:, 5], math.log(_RATIO_LO), math.log(_RATIO_HI))
    rows[:, _C0:_C0 + N_CONTEXT] = context
    in_flight, queue, breaker, recent = context[:, 0], context[:, 1], context[:, 2], context[:, 3]
    cold, log_ratio = context[:, 4] > 0, context[:, 5]
    # the cold-start rule: one GPU runs each queued request first; remote APIs slow down a little
    # per request in flight
    load = np.where(local, 1.0 + _priors.QUEUE_FACTOR_LOCAL * (queue + in_flight),
                    1.0 + _priors.INFLIGHT_FACTOR_REMOTE * in_flight)
    log_lat = rows[:, _B0 + 3] + np.log(load)
    if cold.any():
        at = (lambda a: a) if idx is None else (lambda a: a[idx])
        log_lat = np.where(cold, np.log(np.exp(log_lat) + at(table.load_s)), log_lat)
        rows[:, COL_PRIOR_SIGMA] = np.where(cold, at(table.cold_sigma), rows[:, COL_PRIOR_SIGMA])
    rows[:, COL_PRIOR_LOG_P50] = log_lat + log_ratio
    # recent failures are evidence: averaged with the declared rate once the breaker saw any
    prior_fail = table.prior_fail if idx is None else table.prior_fail[idx]
    fail = np.where(recent > 0, 0.5 * (prior_fail + recent), prior_fail) + np.where(breaker == 0.5, 0.1, 0.0)
    fail = np.clip(fail, *_FAIL_CLIP)
    rows[:, COL_PRIOR_LOGIT_FAIL] = np.log(fail / (1.0 - fail))


def _template(request: RouteRequest, table: OptionTable, backend_codes: dict[str, int] | None) -> _Template:
    key = (request.width, request.height, request.n, request.steps, request.guidance, request.seed is not None,
           id(backend_codes), request.operation, request.strength, request.masked)
    cached = table.templates.get(key)
    if cached is None or cached.codes is not backend_codes:
        if len(table.templates) >= _MAX_TEMPLATES:
            table.templates.clear()
        rows, price, penalty = _request_rows(
            table, None, _nan_if_none(request.width), _nan_if_none(request.height), float(request.n),
            _nan_if_none(request.steps), _nan_if_none(request.guidance), float(request.seed is not None),
            table.codes(backend_codes), *operation_columns(request))
        _fill_context(rows, table, None, table.no_load)
        price.setflags(write=False)
        cached = table.templates[key] = _Template(backend_codes, rows, price, penalty, bool((penalty == 1.0).all()),
                                                  rows[:, _B0 + 3].tolist())
    return cached


def featurize(
    request: RouteRequest,
    options: Sequence[tuple[BackendProfile, int | None]],
    context: RouteContext,
    backend_codes: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows (one per option) and each option's price for one request.

    The serving fast path of :func:`feature_rows`: the part that depends only on the request's shape
    (size, images, steps, guidance, seed) is cached per option table, so a decision copies a
    template and fills in the prompt and the live context.
    """
    return featurize_table(request, option_table(options), context, backend_codes)


def featurize_table(request: RouteRequest, table: OptionTable, context: RouteContext,
                    backend_codes: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`featurize` for a table the caller keeps (a trained predictor holds one per option list)."""
    t = _template(request, table, backend_codes)
    rows = t.rows.copy()
    pv = prompt_vector(request.prompt, request.negative_prompt is not None)
    rows[:, :N_PROMPT] = pv
    # the cold-start correction prior, as _fill_prompt computes it (same operations, same floats)
    risk = table.risk_weights @ pv[_P_START:]
    rows[:, COL_PRIOR_CORRECTION] = (risk if t.unit_penalty else t.penalty * risk) + _priors.BASE_CORRECTION_S
    if context.backends or context.default is not None:
        # in_flight .. prior_logit_fail are contiguous: one assignment from Python floats
        rows[:, _C0:COL_PRIOR_LOGIT_FAIL + 1] = table.live_tail(context, t.log_latency)
    return rows, t.price


def prices(request: RouteRequest, options: Sequence[tuple[BackendProfile, int | None]]) -> np.ndarray:
    """Each option's price for ``request`` (read-only; from the same cache as :func:`featurize`)."""
    return _template(request, option_table(options), None).price


def candidate_matrix(
    request: RouteRequest,
    options: Sequence[tuple[BackendProfile, int | None]],
    context: RouteContext,
    backend_codes: dict[str, int] | None = None,
) -> np.ndarray:
    """One feature row per (backend profile, step option)."""
    return featurize(request, options, context, backend_codes)[0]
