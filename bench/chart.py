"""
The chart of bench/run.py: one horizontal bar per target, coloured by kind.

At more than one connection the bars are requests/s (higher is better); at
C{-c 1} they are the p50 latency (lower is better), or the mean for the
h2load rows, which have no p50 (the bar's text says which).  The title and footer
say when, where and how it was measured.  Needs matplotlib (the C{bench}
extra); bench/run.py imports this module only when it draws a chart.
"""

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

KINDS = {
    "native": ("native servers", "#4C72B0"),
    "peer": ("Python peers (aiohttp)", "#DD8452"),
    "gauge": ("Twisted gauges", "#55A868"),
    "txlb": ("txlb", "#C44E52"),
}
FAILED = "#B00020"
WRAP = 140  # characters per footer line
LEFT, RIGHT = 0.3, 0.98  # the axes' edges, as fractions of the 12-inch width
CHAR = 0.075  # inches per character of a 9-point bar label, with a margin


def _value(row, latency):
    r = row.result
    if r.failure and not r.requests:
        return None
    if latency:
        return r.p50 if r.p50 is not None else r.mean
    return r.rps


def _text(row, latency):
    r = row.result
    if _value(row, latency) is None:
        return "FAILED: " + textwrap.shorten(r.short, 100)
    p50 = "-" if r.p50 is None else f"{r.p50:.2f}"
    p99 = "-" if r.p99 is None else f"{r.p99:.2f}"
    added = "" if row.addedP50 is None else f" ({row.addedP50:+.2f})"
    # h2load prints no percentiles: its rows show the mean instead.
    percentiles = r.p50 is not None or r.mean is None
    if latency:
        text = f"p50 {p50}{added}, p99 {p99} ms" if percentiles else f"mean {r.mean:.2f} ms"
        text += f", {r.rps:,.0f}/s"
    else:
        share = ""
        if row.ofDirect is not None and row.spec.key != "direct":
            share = f" ({row.ofDirect:.2f}x direct)"
        text = f"{r.rps:,.0f}/s{share}, " + (
            f"p50 {p50}, p99 {p99} ms" if percentiles else f"mean {r.mean:.2f} ms"
        )
    if r.bad:
        text += f"  !! {textwrap.shorten(r.short, 40)}"
    if r.skewed:
        sides = r.otherSides or (r.otherCpu,)
        text += "  ! load " + "+".join(f"{x:.1f}" for x in sides)
    return text


def draw(path, rows, meta, ratios=(), notes=()):
    """
    Draw the bars of C{rows} (bench/run.py's L{Row}s) to the PNG C{path},
    with C{meta} (run.py's L{describe}) in the title and footer and the
    C{ratios} and C{notes} lines under the bars.  A bar whose result other
    load skewed says so.
    """
    latency = meta["connections"] == 1
    footer = [
        f"{meta['pinning'][:1].upper()}{meta['pinning'][1:]}.",
        "; ".join(meta["software"]) + ".",
        "Requests/s ratios: " + ("; ".join(ratios) or "none") + ".",
        *notes,
        f"Command: {meta['command']}",
    ]
    if any(r.result.skewed for r in rows):
        footer.insert(
            0,
            "! load P+W: other processes used P CPUs on the target's CPU and W on wrk's "
            "while it was measured, so its numbers are skewed.",
        )
    footer = [part for line in footer for part in textwrap.wrap(line, WRAP)]
    titleInches, axisInches, lineInches = 0.95, 0.95, 0.16
    footerInches = lineInches * len(footer) + 0.15
    height = titleInches + 0.4 * len(rows) + 0.3 + axisInches + footerInches
    fig, ax = plt.subplots(figsize=(12, height), dpi=110)
    values = [_value(row, latency) for row in rows]
    top = max((v for v in values if v), default=1.0)
    ys = list(range(len(rows)))[::-1]
    for y, row, value in zip(ys, rows, values, strict=True):
        colour = KINDS.get(row.spec.kind, ("", "grey"))[1]
        pypy = row.spec.runtime == "pypy"
        if value is None:
            ax.text(top * 0.01, y, _text(row, latency), va="center", fontsize=9, color=FAILED)
            continue
        ax.barh(
            y,
            value,
            height=0.7,
            color=colour,
            hatch="//" if pypy else None,
            edgecolor="white" if pypy else colour,
            linewidth=0,
        )
        ax.text(value + top * 0.01, y, _text(row, latency), va="center", fontsize=9)
    ax.set_yticks(ys)
    ax.set_yticklabels([row.label for row in rows], fontsize=10)
    # Room on the right of each bar for its text: about CHAR inches a character.
    width = 12 * (RIGHT - LEFT)
    xmax = top * 1.15
    for row, value in zip(rows, values, strict=True):
        room = width - CHAR * len(_text(row, latency))
        if value and room > 0:
            xmax = max(xmax, value * width / room)
    ax.set_xlim(0, xmax)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.xaxis.grid(True, color="#dddddd")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if latency:
        ax.set_xlabel("p50 latency, ms (lower is better); in brackets: added over direct")
        what = "p50 latency at one connection"
    else:
        ax.set_xlabel("requests/s (higher is better)")
        what = "requests/s"
    fig.text(
        0.01,
        1 - 0.1 / height,
        f"txlb benchmark: GET /ping through each target, {what}\n"
        f"Measured {meta['date']} on {meta['machine']}\n{meta['wrk']}",
        fontsize=11,
        va="top",
        ha="left",
    )
    kinds = {row.spec.kind for row in rows}
    handles = [Patch(color=c, label=name) for k, (name, c) in KINDS.items() if k in kinds]
    if any(row.spec.runtime == "pypy" for row in rows):
        handles.append(Patch(facecolor="#999999", hatch="//", edgecolor="white", label="PyPy"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.5 / (0.4 * len(rows) + 0.3)),
        ncol=len(handles),
        fontsize=9,
        frameon=False,
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 10 else f"{x:g}"))
    fig.subplots_adjust(
        left=LEFT,
        right=RIGHT,
        top=1 - titleInches / height,
        bottom=(footerInches + axisInches) / height,
    )
    fig.text(
        0.01,
        0.01,
        "\n".join(footer),
        fontsize=8.5,
        va="bottom",
        ha="left",
        color="#333333",
        family="monospace",
    )
    fig.savefig(path)
    plt.close(fig)
