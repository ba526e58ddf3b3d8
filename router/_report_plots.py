"""The training report's plots, drawn with matplotlib (the ``report`` extra) as SVG text.

Figures are built with matplotlib's object API (``Figure`` + the SVG canvas), never pyplot: no
global backend is chosen, so an application that embeds the trainer keeps its own matplotlib
setup, and nothing needs a display. Without matplotlib :func:`draw_all` returns nothing and the
report says how to get the plots.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BLUE, ORANGE, GREY, RED = "#3b6ea8", "#d9822b", "#8a939c", "#b3261e"
#: a feature-importance panel shows at most this many features
TOP_FEATURES = 10


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _text(label: str) -> str:
    # backend and policy names come from logs: a `$` pair would be read as mathtext
    return label.replace("$", r"\$")


def _figure(width: float, height: float, **kw: Any) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**kw)


def _svg(fig: Figure) -> str:
    import matplotlib

    buf = io.StringIO()
    # a fixed hash salt and no date: the same report draws the same bytes
    with matplotlib.rc_context({"svg.hashsalt": "pixelroute-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _style(ax: Axes) -> None:
    ax.grid(True, axis="both", color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def latency_coverage(cov: dict[str, dict[str, float]], alpha: float) -> str:
    q = f"p{round(alpha * 100)}"
    names = list(cov)
    fig, ax = _figure(7.5, 0.9 + 0.42 * len(names))
    ys = list(range(len(names)))
    h = 0.38
    ax.barh([y - h / 2 for y in ys], [cov[b]["p50"] for b in names], height=h, color=BLUE, label="p50 coverage")
    ax.barh([y + h / 2 for y in ys], [cov[b][q] for b in names], height=h, color=ORANGE, label=f"{q} coverage")
    ax.axvline(0.5, color=BLUE, linestyle="--", linewidth=1.2, label="p50 target 0.50")
    ax.axvline(alpha, color=ORANGE, linestyle="--", linewidth=1.2, label=f"{q} target {alpha:.2f}")
    ax.set_yticks(ys, [_text(f"{'all backends' if b == '*' else b} (n={cov[b]['rows']})") for b in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("share of held-out attempts at or under the predicted latency quantile")
    ax.set_title("Latency coverage per backend (held-out slice)")
    _style(ax)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return _svg(fig)


def _wilson(k: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    z = 1.96
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def failure_calibration(bins: list[dict[str, float]]) -> str:
    fig, (top, bottom) = _figure(6.0, 6.0, nrows=2, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    pred = [b["predicted"] for b in bins]
    obs = [b["observed"] for b in bins]
    ci = [_wilson(b["observed"] * b["rows"], int(b["rows"])) for b in bins]
    hi = max([0.05, *pred, *obs]) * 1.15
    top.plot([0, hi], [0, hi], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
    top.errorbar(pred, obs, yerr=[[o - lo for o, (lo, _) in zip(obs, ci, strict=True)],
                                  [up - o for o, (_, up) in zip(obs, ci, strict=True)]],
                 fmt="o", color=BLUE, ecolor="#9db7d5", capsize=3, label="bin: observed rate, 95% interval")
    for b in bins:
        top.annotate(f"n={b['rows']}", (b["predicted"], b["observed"]), textcoords="offset points", xytext=(6, 4),
                     fontsize=8, color="#34495e")
    top.set_xlim(0, hi)
    top.set_ylim(0, max(hi, *(up for _, up in ci)) if ci else hi)
    top.set_ylabel("observed failure rate")
    top.set_title("Calibration of P(fail) (held-out slice)")
    top.legend(loc="upper left", fontsize=8)
    _style(top)
    for b in bins:
        left, right = b["from"], min(b["to"], hi)
        if left < hi:
            bottom.bar(left, b["rows"], width=right - left, align="edge", color=BLUE, alpha=0.55,
                       edgecolor="white")
    bottom.set_xlabel("mean predicted P(fail) in the bin")
    bottom.set_ylabel("attempts")
    _style(bottom)
    return _svg(fig)


def correction_error(c: dict[str, Any]) -> str:
    bins = c.get("by_predicted") or []
    fig, (left, right) = _figure(7.5, 3.4, ncols=2, gridspec_kw={"width_ratios": [1, 1.6]})
    labels = ["model", "training mean"]
    values = [c["mae_s"] or 0.0, c["mae_constant_s"] or 0.0]
    bars = left.bar(labels, values, color=[BLUE, GREY], width=0.6)
    left.bar_label(bars, fmt="%.1f s", fontsize=8)
    left.set_ylabel("mean absolute error (s)")
    left.set_title(f"Error on {c['rows']} attempts")
    left.margins(y=0.15)
    _style(left)
    if bins:
        p = [b["predicted_s"] for b in bins]
        o = [b["observed_s"] for b in bins]
        hi = max([*p, *o, 1.0]) * 1.1
        right.plot([0, hi], [0, hi], color=GREY, linestyle="--", linewidth=1, label="prediction = observation")
        right.plot(p, o, "o-", color=BLUE, label="bin of equal size by prediction")
        for b in bins:
            right.annotate(f"n={b['rows']}", (b["predicted_s"], b["observed_s"]), textcoords="offset points",
                           xytext=(5, -11), fontsize=8, color="#34495e")
        right.set_xlim(0, hi)
        right.set_ylim(0, hi)
        right.legend(loc="upper left", fontsize=8)
    right.set_xlabel("mean predicted correction (s)")
    right.set_ylabel("mean observed correction (s)")
    right.set_title("Predicted against observed")
    _style(right)
    return _svg(fig)


def off_policy(ope: dict[str, dict[str, float]]) -> str:
    names = [k for k in ope if k != "logged"]
    lg = ope["logged"]
    fig, (cost_ax, sla_ax) = _figure(7.5, 1.3 + 0.5 * len(names), ncols=2, sharey=True,
                                     gridspec_kw={"width_ratios": [1.5, 1]})
    ys = list(range(len(names)))

    def errs(key: str, off: float, ax: Axes, color: str, label: str) -> None:
        pts = [(y + off, ope[n][key], ope[n].get(f"{key}_lo", math.nan), ope[n].get(f"{key}_hi", math.nan))
               for y, n in zip(ys, names, strict=True) if _finite(ope[n][key])]
        if not pts:
            return
        below = [v - lo if _finite(lo) else 0.0 for _, v, lo, _ in pts]
        above = [hi - v if _finite(hi) else 0.0 for _, v, _, hi in pts]
        ax.errorbar([v for _, v, _, _ in pts], [y for y, _, _, _ in pts], xerr=[below, above], fmt="o",
                    color=color, capsize=3, label=label)

    def logged(ax: Axes, key: str, label: str) -> None:
        v, lo, hi = (lg.get(k, math.nan) for k in (key, f"{key}_lo", f"{key}_hi"))
        if not _finite(v):
            return
        if _finite(lo) and _finite(hi):
            ax.axvspan(lo, hi, color=GREY, alpha=0.18, linewidth=0)
        ax.axvline(v, color=GREY, linestyle="--", linewidth=1.2, label=label)

    logged(cost_ax, "cost", "logged policy, 95% band")
    errs("snips_cost", -0.15, cost_ax, BLUE, "SNIPS, 95% interval")
    errs("dr_cost", 0.15, cost_ax, ORANGE, "doubly robust, 95% interval")
    cost_ax.set_yticks(ys, [_text(n) for n in names])
    cost_ax.invert_yaxis()
    cost_ax.set_xlabel("estimated cost per attempt (USD)")
    cost_ax.set_title("Cost")
    _style(cost_ax)
    logged(sla_ax, "sla_attainment", "logged policy")
    errs("snips_sla_attainment", 0.0, sla_ax, BLUE, "SNIPS")
    sla_ax.set_xlim(0, 1.02)
    sla_ax.set_xlabel("estimated SLA attainment (share)")
    sla_ax.set_title("SLA attainment")
    _style(sla_ax)
    handles, labels = cost_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return _svg(fig)


def feature_importance(imp: dict[str, dict[str, float]]) -> str:
    models = list(imp)
    cols = 2
    rows = math.ceil(len(models) / cols)
    fig, axes = _figure(7.5, 2.9 * rows, nrows=rows, ncols=cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(models):
            ax.set_visible(False)
            continue
        name = models[k]
        items = [(f, v) for f, v in imp[name].items() if f != "(other)"][:TOP_FEATURES]
        other = imp[name].get("(other)")
        if other:
            items.append(("(other)", other))
        ys = list(range(len(items)))
        ax.barh(ys, [v for _, v in items], color=[GREY if f == "(other)" else BLUE for f, _ in items])
        ax.set_yticks(ys, [_text(f) for f, _ in items], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max([v for _, v in items] or [1.0]) * 1.1)
        ax.set_xlabel("share of split gain")
        ax.set_title(_text(name))
        _style(ax)
    return _svg(fig)


def draw_all(manifest: dict[str, Any], ope: dict[str, dict[str, float]] | None) -> dict[str, str]:
    """Every plot the report has data for, by file name; empty without matplotlib."""
    if not available():
        return {}
    m = manifest["metrics"]
    out = {"latency_coverage.svg": latency_coverage(m["latency_coverage"], float(manifest["latency_quantile"]))}
    if m["failure"]["reliability"]:
        out["failure_calibration.svg"] = failure_calibration(m["failure"]["reliability"])
    if m["correction"]["rows"]:
        out["correction_error.svg"] = correction_error(m["correction"])
    if ope and any(k != "logged" for k in ope):
        out["off_policy.svg"] = off_policy(ope)
    if m.get("feature_importance"):
        out["feature_importance.svg"] = feature_importance(m["feature_importance"])
    return out
