"""The one featurizer: the SAME code builds feature rows at serve time and at training time.

A row describes one candidate (a backend and, for local pipelines, a step count) for one
request. Three blocks, in this order (see :data:`FEATURE_NAMES`):

* prompt signals, computed once per prompt and cached: lengths vs the 77-token CLIP window,
  typography (quoted text, "a sign that says"), counting (numerals, number words, plurals),
  composition (conjunctions, spatial relations, occlusion), reflective surfaces, anatomy,
  negation, style words, and the prompt classifier's probability per scenario;
* the request as this candidate would run it: megapixels, aspect ratio, effective steps and
  guidance, images, negative prompt, fixed seed;
* the backend and live context: backend code (index among the backends a model was trained
  on), local/remote, price, prior latency, declared strengths, in-flight, queue depth, breaker
  state, recent failure rate.

:func:`schema_hash` changes whenever names, order or meaning change; a trained artifact
records it and :meth:`router.Router.load` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from . import _priors
from ._types import BackendProfile, BackendState, RouteContext, RouteRequest
from .classifier import CLASSES, default_classifier

#: bump when a feature's meaning changes without its name changing
SCHEMA_VERSION = "pixelroute.features/2"
SCENARIOS: tuple[str, ...] = ("typography", "counting", "composition", "reflection", "anatomy")
#: CLIP's text encoder sees 77 tokens; longer prompts lose their tail in SD-family models
CLIP_WINDOW = 77

_WORD = re.compile(r"[a-z0-9']+")
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
)
BACKEND_FEATURES: tuple[str, ...] = (
    "backend_code", "local", "log_price_usd", "log_prior_latency_s",
    *(f"strength_{s}" for s in SCENARIOS),
    "in_flight", "queue_depth", "breaker", "recent_failure_rate",
    # the cold-start correction prior (declared strengths x scenario probabilities) as one number:
    # trees learn how far each backend really is from what it declares
    "prior_correction_s",
)
FEATURE_NAMES: tuple[str, ...] = PROMPT_FEATURES + REQUEST_FEATURES + BACKEND_FEATURES
N_PROMPT = len(PROMPT_FEATURES)
N_FEATURES = len(FEATURE_NAMES)
_P_START = PROMPT_FEATURES.index("p_typography")
_BREAKER = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


def schema_hash() -> str:
    """Hash of the feature schema (names, order, version, classifier); artifacts are tied to it."""
    text = "|".join((SCHEMA_VERSION, default_classifier().version, *FEATURE_NAMES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=8192)
def prompt_vector(prompt: str, has_negative_prompt: bool = False) -> np.ndarray:
    """The prompt block (read-only array). Cached: the SDK re-decides with the same prompt on fallback."""
    lower = prompt.lower()
    words = _WORD.findall(lower)
    n_words = len(words)
    # CLIP BPE splits rare words and punctuation: ~1.3 tokens per word is a good cheap estimate
    tokens_est = 1.3 * n_words + prompt.count(",") + prompt.count(".") + 2
    counts = dict.fromkeys(_LEXICON_WORDS, 0)
    plurals = 0
    for w in words:
        cat = _LEXICON.get(w)
        if cat is None and len(w) > 5:
            cat = next((c for prefix, c in _PREFIXES if w.startswith(prefix)), None)
        if cat is not None:
            counts[cat] += 1
        if len(w) > 3 and w[-1] == "s" and w[-2] not in "sui'" and w not in _EXCEPTIONS:
            plurals += 1
    for phrase in _PHRASES.findall(lower):
        counts[_PHRASE_LEXICON[phrase]] += 1
    counts["conj"] += prompt.count(",")
    reflective = counts["reflective"]
    clf = default_classifier().predict(prompt)
    probs = dict(zip(CLASSES, clf.tolist(), strict=True))
    # reflection has no labelled prompt set: a saturating lexicon score stands in for a probability
    probs["reflection"] = 1.0 - math.exp(-0.8 * reflective)
    vec = np.array([
        len(prompt), n_words, tokens_est, float(tokens_est > CLIP_WINDOW),
        len(_QUOTED.findall(prompt)), counts["text"], len(_NUMERAL.findall(lower)), counts["number"], plurals,
        counts["conj"], counts["spatial"], counts["occlusion"], reflective, counts["anatomy"],
        counts["negation"], counts["style"], float(has_negative_prompt),
        *(probs[s] for s in SCENARIOS),
    ], dtype=np.float64)
    vec.setflags(write=False)
    return vec


def scenario_probabilities(prompt: str) -> dict[str, float]:
    """Per-scenario probability for ``prompt`` (classifier, plus the reflection lexicon)."""
    vec = prompt_vector(prompt)
    start = PROMPT_FEATURES.index("p_typography")
    return {s: float(vec[start + i]) for i, s in enumerate(SCENARIOS)}


def candidate_matrix(
    request: RouteRequest,
    options: Sequence[tuple[BackendProfile, int | None]],
    context: RouteContext,
    backend_codes: dict[str, int] | None = None,
    prior_latencies: np.ndarray | None = None,
    prices: np.ndarray | None = None,
) -> np.ndarray:
    """One feature row per (backend profile, step option). ``prices``/``prior_latencies`` may be passed
    when the caller already computed them (the policy does), so nothing is computed twice."""
    rows = np.empty((len(options), N_FEATURES), dtype=np.float64)
    prompt_block = prompt_vector(request.prompt, request.negative_prompt is not None)
    rows[:, :N_PROMPT] = prompt_block
    scenario_p = prompt_block[_P_START:N_PROMPT].tolist()
    codes = backend_codes or {}
    for i, (profile, option) in enumerate(options):
        steps = _priors.effective_steps(profile, request.steps, option)
        d_steps = _priors.default_steps(profile)
        mp = _priors.megapixels(profile, request.width, request.height)
        w = request.width or profile.default_width
        h = request.height or profile.default_height
        prior = (float(prior_latencies[i]) if prior_latencies is not None
                 else _priors.prior_latency_s(profile, mp, steps, request.n))
        price = float(prices[i]) if prices is not None else _priors.price_usd(profile, mp, request.n, prior)
        guidance = request.guidance if request.guidance is not None else (profile.default_guidance or 0.0)
        state: BackendState = context.get(profile.name)
        strengths = profile.strengths
        prior_corr = _priors.prior_correction_s(profile, scenario_p, steps)
        rows[i, N_PROMPT:] = (
            mp, math.log(w / h), steps or 0.0, (steps / d_steps) if (steps and d_steps) else 1.0, guidance,
            request.n, float(request.seed is not None),
            codes.get(profile.name, -1), float(profile.local), math.log(price + 1e-4), math.log(prior),
            *(strengths.get(s, _priors.DEFAULT_STRENGTH) for s in SCENARIOS),
            state.in_flight, state.queue_depth, _BREAKER.get(state.breaker, 0.0), state.recent_failure_rate,
            prior_corr,
        )
    return rows
