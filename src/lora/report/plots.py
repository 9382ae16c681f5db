"""Report plots as PNG bytes: the training-loss curve and per-utterance WER (before/after or one model).

Uses matplotlib's object API (`Figure` + the Agg canvas) rather than pyplot: no global figure state,
no backend selection, so it is headless and safe to call from any process or thread. Functions
return bytes; writing them (atomically) is the caller's business.
"""

from __future__ import annotations

import io
import math

from lora.core.extras import require_extra

WORSE, BETTER, SAME, BEFORE = "#c0392b", "#1e8449", "#7f8c8d", "#95a5a6"
LOSS, LR = "#2c6fbb", "#e67e22"
DPI = 110
FIGSIZE = (10, 4.2)
MAX_TICK_LABELS = 30  # beyond this, utterance ids on the x axis become unreadable; show indices


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _figure():
    require_extra("matplotlib", "report", "report plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _no_data_panel(ax, message: str) -> None:
    """An empty run still gets a (clearly empty) plot, so the set of report files never varies."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color=SAME, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _utterance_axis(ax, ids: list[str]) -> None:
    ax.set_xlim(-0.7, len(ids) - 0.3)
    if len(ids) <= MAX_TICK_LABELS:
        ax.set_xticks(range(len(ids)), ids, rotation=60, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"utterance (1-{len(ids)}, order as in the table)")


def loss_curve_png(history: list[dict], eval_before: float | None = None, eval_after: float | None = None,
                   eval_history: list[dict] | None = None, best_step: int | None = None) -> bytes:
    """Train loss per optimiser step, the learning rate on a second axis, eval losses as reference lines;
    with `eval_history` (`--eval-steps`) also the eval loss at each evaluation and, below, WER per step
    with the kept step marked."""
    points = [(h.get("step"), _finite(h.get("loss"))) for h in history or []]
    points = [(s, v) for s, v in points if s is not None and v is not None]
    evals = [(e.get("step"), _finite(e.get("eval_loss")), _finite(e.get("wer"))) for e in eval_history or []]
    evals = [e for e in evals if e[0] is not None]
    fig = _figure()
    if evals:
        fig.set_size_inches(FIGSIZE[0], FIGSIZE[1] * 1.8)
        ax = fig.add_subplot(2, 1, 1)
        _eval_wer_axes(fig.add_subplot(2, 1, 2), evals, best_step)
    else:
        ax = fig.add_subplot()
    ax.set_title("Training loss")
    if not points:
        _no_data_panel(ax, "no training loss was logged")
        return _png(fig)
    steps, losses = zip(*points)
    ax.plot(steps, losses, color=LOSS, marker="o" if len(steps) <= 50 else None, markersize=3, label="train loss")
    for value, label, style in ((eval_before, "eval loss before", ":"), (eval_after, "eval loss after", "--")):
        if _finite(value) is not None:
            ax.axhline(value, color=SAME, linestyle=style, linewidth=1, label=label)
    losses_at = [(st, v) for st, v, _ in evals if v is not None]
    if losses_at:
        ax.plot(*zip(*losses_at), color=BETTER, marker="s", markersize=4, linewidth=1, label="eval loss (--eval-steps)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lrs = [(h.get("step"), _finite(h.get("lr"))) for h in history if _finite(h.get("lr")) is not None]
    ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = ax.get_legend_handles_labels()
    top = ax
    if lrs:
        top = ax.twinx()
        top.plot(*zip(*lrs), color=LR, alpha=0.6, linewidth=1, label="learning rate")
        top.set_ylabel("learning rate", color=LR)
        top.set_ylim(bottom=0)
        top.tick_params(axis="y", colors=LR)
        more_handles, more_labels = top.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    top.legend(handles, labels, loc="upper right", fontsize=8, framealpha=0.95)  # on the top axes: drawn over both curves
    return _png(fig)


def _eval_wer_axes(ax, evals: list[tuple], best_step: int | None) -> None:
    """WER at each evaluation during training, the kept (best) step circled."""
    ax.set_title("Eval WER during training")
    wers = [(st, 100 * w) for st, _, w in evals if w is not None]
    if not wers:
        _no_data_panel(ax, "no WER was measured during training")
        return
    ax.plot(*zip(*wers), color=WORSE, marker="o", markersize=4, label="eval WER")
    kept = [(st, w) for st, w in wers if st == best_step]
    if kept:
        ax.scatter(*zip(*kept), s=140, facecolors="none", edgecolors="black", zorder=4, label=f"kept (step {best_step})")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("WER (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.95)


def _change_colour(change: float) -> str:
    return WORSE if change > 1e-12 else BETTER if change < -1e-12 else SAME


def wer_pairs_png(samples: list[dict]) -> bytes:
    """Dumbbell chart: each utterance's WER before (grey) and after (red worse, green better, grey same).

    Utterances keep the order of `samples` (worst regressions first), so the plot reads like the table.
    """
    rows = [(s.get("id", "?"), _finite(s.get("wer_before")), _finite(s.get("wer_after"))) for s in samples or []]
    rows = [r for r in rows if r[1] is not None and r[2] is not None]
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("WER per utterance, before \u2192 after fine-tuning")
    if not rows:
        _no_data_panel(ax, "no per-utterance results")
        return _png(fig)
    for x, (_, before, after) in enumerate(rows):
        colour = _change_colour(after - before)
        ax.plot([x, x], [100 * before, 100 * after], color=colour, linewidth=2, alpha=0.7)
        ax.scatter([x], [100 * after], color=colour, s=28, zorder=3)
    ax.scatter(range(len(rows)), [100 * r[1] for r in rows], facecolors="white", edgecolors=BEFORE, s=28, zorder=4)
    ax.plot([], [], "o", markerfacecolor="white", markeredgecolor=BEFORE, color=BEFORE, label="before")
    for colour, label in ((WORSE, "after (worse)"), (BETTER, "after (better)"), (SAME, "after (same)")):
        ax.plot([], [], "o", color=colour, label=label)
    _utterance_axis(ax, [r[0] for r in rows])
    ax.set_ylabel("WER (%)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # outside: never hides a point
    return _png(fig)


def wer_single_png(samples: list[dict]) -> bytes:
    """Bar per utterance for a single-model evaluation (eval.json), in the given (worst-first) order."""
    rows = [(s.get("id", "?"), _finite(s.get("wer"))) for s in samples or []]
    rows = [r for r in rows if r[1] is not None]
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("WER per utterance")
    if not rows:
        _no_data_panel(ax, "no per-utterance results")
        return _png(fig)
    ax.bar(range(len(rows)), [100 * r[1] for r in rows], color=[WORSE if r[1] > 0 else BETTER for r in rows])
    _utterance_axis(ax, [r[0] for r in rows])
    ax.set_ylabel("WER (%)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
