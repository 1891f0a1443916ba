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


def forest(summary: pd.DataFrame) -> bytes:
    """One panel per metric, each on its own scale (a 100x lift cannot squash the others); the
    world oracle's true lift as a diamond, a guardrail's margin as a dashed line."""
    plt = _plt()
    s = summary.dropna(subset=["rel_lift"])
    multi = summary["arm"].nunique() > 1
    fig, axes = plt.subplots(max(len(s), 1), 1, figsize=(7.5, 0.55 * max(len(s), 1) + 1.0), squeeze=False)
    for ax, r in zip(axes[:, 0], s.itertuples(), strict=False):
        c = ROLE_COLOR.get(r.role, "#555555")
        ax.hlines(0, r.rel_ci_low * 100, r.rel_ci_high * 100, colors=c, lw=2.5)
        ax.plot(r.rel_lift * 100, 0, "o", color=c, zorder=3)
        xs = [r.rel_ci_low * 100, r.rel_ci_high * 100, 0.0]
        if np.isfinite(getattr(r, "true_rel_lift", np.nan)):
            ax.plot(r.true_rel_lift * 100, 0, "D", color="#2ca02c", ms=6, zorder=4, label="world oracle")
            xs.append(r.true_rel_lift * 100)
        if r.role == "guardrail" and np.isfinite(r.margin):
            m = (r.margin if not r.higher_is_better else -r.margin) * 100
            ax.axvline(m, color="#d62728", ls="--", lw=0.8)
            xs.append(m)
        lo, hi = min(xs), max(xs)
        pad = 0.15 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks([0], [f"{r.metric} ({r.arm})" if multi else r.metric])
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_title("Relative lift vs control (%), 95% CI, each metric on its own scale\n"
                         "blue = primary, red = guardrail (dashed: margin), green diamond = true lift", fontsize=9)
    fig.tight_layout()
    return _png(fig)


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
        late = path.iloc[len(path) // 3:]  # early looks' sequences are huge: scale to the rest
        span = np.nanmax(np.abs(np.r_[late["cs_low"] / late["control"], late["cs_high"] / late["control"]])) * 100
        if np.isfinite(span) and span > 0:
            a1.set_ylim(-1.5 * span, 1.5 * span)
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


def _lines(df: pd.DataFrame, by: str, x: str, y: str, xlabel: str, ylabel: str, title: str, marker: str = "o") -> bytes:
    """One line per group of ``df``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, g in df.groupby(by):
        ax.plot(g[x], g[y], marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def channels(con, run_id: str) -> bytes:
    plt = _plt()
    ch = con.execute("SELECT arm, channel, sum(exposures) AS exposures, sum(clicks) AS clicks, "
                     "sum(consumes) AS consumes FROM v_channel_contribution WHERE run_id = ? GROUP BY ALL "
                     "ORDER BY arm, channel", [run_id]).df()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, col in zip(axes, ("exposures", "consumes"), strict=True):
        piv = ch.pivot_table(index="arm", columns="channel", values=col, aggfunc="sum", fill_value=0)
        share = piv.div(piv.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
        share.plot.barh(stacked=True, ax=ax, legend=(col == "consumes"), width=0.6)
        ax.set_title(f"share of {col} by channel")
        ax.set_xlim(0, 1)
        ax.set_ylabel("")
    if axes[1].get_legend():
        axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
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
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{arm}: p50 {np.percentile(v, 50):.3g} ms, "
                f"p99 {np.percentile(v, 99):.3g} ms")
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


def make_plots(con, run_id: str, summary: pd.DataFrame, path: pd.DataFrame | None, metric: str,
               alpha: float) -> dict[str, bytes]:
    plots = {"forest": forest(summary)}
    if path is not None:
        plots["sequential"] = sequential(path, metric, alpha)
    plots.update(cumulative=cumulative(con, run_id), channels=channels(con, run_id), latency=latency(con, run_id))
    return plots


def credit(credit: pd.DataFrame) -> bytes:
    """Interleaving: click-through per slate position for each team."""
    ctr = credit.assign(ctr=credit["clicks"] / credit["exposures"].clip(lower=1))
    return _lines(ctr, "team", "position", "ctr", "slate position (0 = top)", "clicks / exposures",
                  "Interleaving: click-through of each team's items by position")
