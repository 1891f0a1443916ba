"""Report plots as PNG bytes: per-metric lifts, the sequential monitor, cumulative CTR, channels, latency."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

ROLE_COLOR = {"primary": "#1f77b4", "guardrail": "#d62728", "secondary": "#555555"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def forest_limit(rows) -> float:
    """Half-width (%) of a panel's shared x-scale: every row's CI, unless a few rows' CIs are far
    wider than the others' (then the scale is 3x the median row's extent, or 3x the narrowest with
    fewer than 3 rows, and the wider rows run off the panel, labelled); the primary, margins and
    true lifts always fit."""
    ext = np.array([max(abs(r.rel_ci_low), abs(r.rel_ci_high), abs(r.rel_lift)) for r in rows]) * 100
    must = [abs(r.rel_ci_low) * 100 for r in rows if r.role == "primary"] + \
           [abs(r.rel_ci_high) * 100 for r in rows if r.role == "primary"] + \
           [abs(r.margin) * 100 * 1.5 for r in rows if r.role == "guardrail" and r.margin is not None] + \
           [abs(r.true_rel_lift) * 100 for r in rows if r.true_rel_lift is not None]
    typical = np.median(ext) if len(ext) >= 3 else ext.min()
    return float(max(min(ext.max(), 3 * typical), *must, 1e-6) * 1.08)


def _forest_panel(ax, rows, multi: bool) -> None:
    """One metric per line on one shared x-scale (precision comparable across metrics); a CI that
    runs off the scale ends in an arrow with its numbers written beside it."""
    lim = forest_limit(rows)
    for y, r in enumerate(rows):
        c = ROLE_COLOR.get(r.role, "#555555")
        lo, hi, mid = r.rel_ci_low * 100, r.rel_ci_high * 100, r.rel_lift * 100
        ax.hlines(y, max(lo, -lim), min(hi, lim), colors=c, lw=2.5)
        if abs(mid) <= lim:
            ax.plot(mid, y, "o", color=c, zorder=3)
        for edge, off in ((-lim, lo < -lim), (lim, hi > lim)):
            if off:
                ax.plot(edge, y, "<" if edge < 0 else ">", color=c, ms=7, zorder=3, clip_on=False)
        if lo < -lim or hi > lim:
            ax.text(0.99 if mid >= 0 else 0.01, y - 0.28, f"{mid:+.1f}% [{lo:+.1f}%, {hi:+.1f}%]",
                    transform=ax.get_yaxis_transform(), ha="right" if mid >= 0 else "left", va="bottom",
                    fontsize=7, color=c)
        if r.true_rel_lift is not None:
            ax.plot(r.true_rel_lift * 100, y, "D", color="#2ca02c", ms=6, zorder=4)
        if r.role == "guardrail" and r.margin is not None:
            m = (r.margin if not r.higher_is_better else -r.margin) * 100
            ax.vlines(m, y - 0.4, y + 0.4, color="#d62728", ls="--", lw=1.0)
    ax.axvline(0, color="black", lw=0.8)
    marks = [0.0] + [v * 100 for r in rows for v in (r.rel_ci_low, r.rel_ci_high, r.true_rel_lift,
                                                      r.margin if r.role == "guardrail" else None,
                                                      -r.margin if r.role == "guardrail" and r.margin else None)
                     if v is not None]
    left, right = max(min(marks), -lim), min(max(marks), lim)
    pad = 0.06 * (right - left or 1.0)
    ax.set_xlim(left - pad if left > -lim else -lim, right + pad if right < lim else lim)
    ax.set_yticks(range(len(rows)), [f"{r.metric} ({r.arm})" if multi else r.metric for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def forest(effects) -> bytes:
    """Relative lifts with 95% CIs, primary and secondary metrics on one shared scale, guardrails on
    their own (with their margin dashed); the world oracle's true lift as a green diamond."""
    plt = _plt()
    rows = [e for e in effects if e.rel_lift is not None and e.rel_ci_low is not None]
    groups = [g for g in ([e for e in rows if e.role != "guardrail"], [e for e in rows if e.role == "guardrail"]) if g]
    multi = len({e.arm for e in effects}) > 1
    if not groups:
        fig, ax = plt.subplots(figsize=(7.5, 1.2))
        ax.text(0.5, 0.5, "no relative lift could be estimated", ha="center", va="center")
        ax.axis("off")
        return _png(fig)
    heights = [len(g) + 1.2 for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 0.38 * sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, g in zip(axes[:, 0], groups, strict=True):
        _forest_panel(ax, g, multi)
        what = "guardrails (dashed: margin)" if g[0].role == "guardrail" else "primary and secondary metrics"
        ax.set_xlabel(f"relative lift vs control (%), {what}", fontsize=8)
    axes[0, 0].set_title("Relative lift vs control, 95% CI (one shared scale per panel; arrows: a CI off the "
                         "scale, its numbers beside it)\n"
                         "blue = primary, grey = secondary, red = guardrail, green diamond = true lift", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _sequential_ylim(path: pd.DataFrame) -> tuple[float, float]:
    """The y-range of the lift panel (%): the last look's confidence sequence and the estimates of
    the second half of the run, with a margin; early looks' huge sequences run off the panel."""
    c = path["control"].where(path["control"] > 0)
    last = path.iloc[-1]
    late = path.iloc[len(path) // 2:]
    vals = np.r_[last["cs_low"] / c.iloc[-1], last["cs_high"] / c.iloc[-1], late["rel_lift"]] * 100
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return -10.0, 10.0
    lo, hi = min(vals.min(), 0.0), max(vals.max(), 0.0)
    pad = 0.25 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def sequential(path: pd.DataFrame, metric: str, alpha: float) -> bytes:
    """The primary lift over simulated time: fixed-horizon CI vs confidence sequence, and the p-values."""
    from matplotlib.ticker import FuncFormatter

    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 5.2), sharex=True)
    if not path.empty:
        h, c = path["hours"], path["control"].where(path["control"] > 0)
        a1.fill_between(h, path["ci_low"] / c * 100, path["ci_high"] / c * 100, alpha=0.25, color="#999999",
                        label="fixed-horizon 95% CI (valid only at the planned end)")
        a1.fill_between(h, path["cs_low"] / c * 100, path["cs_high"] / c * 100, alpha=0.25, color="#1f77b4",
                        label="95% confidence sequence (valid at every look)")
        a1.plot(h, path["rel_lift"] * 100, ".-", color="#1f77b4", label="estimate")
        a2.plot(h, path["p_fixed"], ".-", color="#999999", label="fixed-horizon p")
        a2.plot(h, path["p_always_valid"], ".-", color="#1f77b4", label="always-valid p (mSPRT)")
        a1.set_ylim(*_sequential_ylim(path))
        a1.legend(fontsize=7)
    a1.axhline(0, color="black", lw=0.8)
    a1.set_ylabel(f"{metric}: relative lift (%)")
    a1.set_title(f"Sequential monitor of {metric} over simulated time")
    a2.axhline(alpha, color="#d62728", ls="--", lw=0.8, label=f"alpha {alpha:g}")
    a2.set_yscale("log")
    a2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain text: no mathtext parser
    a2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    a2.set_ylim(max(min(path["p_always_valid"].min() if not path.empty else 1, 1e-6) / 2, 1e-8), 1.2)
    a2.set_xlabel("simulated hours since run start")
    a2.set_ylabel("p-value")
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    return _png(fig)


def cumulative(con, run_id: str) -> bytes:
    cum = con.execute("SELECT arm, hour, cum_ctr FROM v_cumulative WHERE run_id = ? ORDER BY arm, hour",
                      [run_id]).df()
    return _lines(cum, "arm", "hour", "cum_ctr", "simulated hours since run start", "cumulative CTR",
                  "Cumulative CTR over simulated time", marker=".")


def _lines(df: pd.DataFrame, by: str, x: str, y: str, xlabel: str, ylabel: str, title: str, marker: str = "o",
           integer_x: bool = False) -> bytes:
    """One line per group of ``df``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, g in df.groupby(by):
        ax.plot(g[x], g[y], marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def channels(con, run_id: str) -> bytes:
    """Per arm, the share of its exposures and of its clicks whose item each retrieval channel
    found; an item found by two channels counts for both (the bars of an arm can add up to more
    than 100%)."""
    from matplotlib.ticker import PercentFormatter

    plt = _plt()
    ch = con.execute("SELECT arm, channel, exposure_share, coalesce(click_share, 0) AS click_share "
                     "FROM v_channel_contribution WHERE run_id = ? ORDER BY arm, channel", [run_id]).df()
    fig, axes = plt.subplots(1, 2, figsize=(9, 1.2 + 0.45 * max(len(ch), 2)), sharey=True)
    for ax, col, what in zip(axes, ("exposure_share", "click_share"), ("exposures", "clicks"), strict=True):
        piv = ch.pivot_table(index="arm", columns="channel", values=col, aggfunc="sum", fill_value=0)
        piv.iloc[::-1].plot.barh(ax=ax, legend=(what == "clicks"), width=0.8)  # first arm on top
        for bars in ax.containers:
            ax.bar_label(bars, labels=[f"{v:.0%}" if v > 0 else "" for v in bars.datavalues], fontsize=7,
                         padding=2)
        ax.set_title(f"share of each arm's {what} found by each channel\n(an item found by two channels "
                     "counts for both)", fontsize=9)
        ax.set_xlim(0, 1.15)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_ylabel("")
        ax.grid(axis="x", alpha=0.3)
    if axes[1].get_legend():
        axes[1].legend(title="channel", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return _png(fig)


def latency(con, run_id: str) -> bytes:
    import matplotlib
    from matplotlib.ticker import LogLocator, ScalarFormatter

    plt = _plt()
    lat = con.execute("SELECT arm, latency_ms FROM requests WHERE run_id = ? AND latency_ms IS NOT NULL "
                      "USING SAMPLE reservoir(200000 ROWS) REPEATABLE (0)", [run_id]).df()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for arm, g in lat.groupby("arm"):
        v = np.sort(g["latency_ms"].to_numpy())
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{arm}: mean {v.mean():.3g} ms (the guardrail's "
                f"statistic), p50 {np.percentile(v, 50):.3g}, p99 {np.percentile(v, 99):.3g} ms")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("serving time per request (ms, log scale; pipeline calls amortised over their requests)")
    ax.set_ylabel("share of requests <= x")
    ax.set_title("Latency distribution per arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def credit(credit: pd.DataFrame) -> bytes:
    """Interleaving: click-through per slate position for each team."""
    ctr = credit.assign(ctr=credit["clicks"] / credit["exposures"].clip(lower=1))
    return _lines(ctr, "team", "position", "ctr", "slate position (0 = top)", "clicks / exposures",
                  "Interleaving: click-through of each team's items by position", integer_x=True)
