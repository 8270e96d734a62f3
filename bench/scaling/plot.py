#!/usr/bin/env python3
"""Draws the scaling curves of BENCHMARKS.md "How cost grows" (issue 18) from the JSON lines.

Needs matplotlib (`pip install matplotlib`). Reads, from bench/results/ (or the directory given as
the first argument):
  scaling-connections.jsonl  (bench/scaling/run.sh)  -> scaling-connections.png
  scaling-payload.jsonl      (bench/scaling/run.sh)  -> scaling-payload.png
  scaling-idle-rss.jsonl     (getty-idle-rss)        -> scaling-idle-rss.png
and writes the PNGs beside them. A file that is missing is skipped. When a file holds several
runs of a point (run.sh appends), the last one is drawn. A point whose client failed is drawn as
a cross on the x axis, labelled "failed", so that it is not silently missing from the curve.
Also prints, per curve, a markdown table of the points drawn (for BENCHMARKS.md).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

IMPLS = ["getty", "raw", "tarpc"]
STYLE = {
    "getty": dict(color="tab:blue", marker="o"),
    "raw": dict(color="tab:gray", marker="s"),
    "tarpc": dict(color="tab:orange", marker="^"),
}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def last_per_point(rows):
    """{impl: {point: row}}, the last row of each (impl, point)."""
    out = {}
    for r in rows:
        out.setdefault(r["name"], {})[r["point"]] = r
    return out


def human_bytes(b):
    for unit, k in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= k and b % k == 0:
            return f"{b // k} {unit}"
    return f"{b} B"


def human_count(n):
    return f"{n:,}"


def fmt_number(y, _pos=None):
    """An axis label: 1,000 rather than 10^3."""
    return f"{y:,.0f}" if y >= 1 else f"{y:g}"


def fmt_us(y, _pos=None):
    """An axis label for microseconds: 100 µs, 10 ms, 1 s."""
    if y >= 1e6:
        return f"{y / 1e6:g} s"
    if y >= 1e3:
        return f"{y / 1e3:g} ms"
    return f"{y:g} µs"


def series(points, key):
    """(xs, ys) of the successful points, and the xs of the failed ones."""
    ok, failed = [], []
    for x in sorted(points):
        r = points[x]
        res = r.get("result")
        if res is None or (res.get("errors", 0) > 0 and res.get("calls", 0) == 0):
            failed.append(x)
        else:
            ok.append((x, key(res)))
    return [x for x, _ in ok], [y for _, y in ok], failed


def panel(ax, data, key, ylabel, xlabel, xticks, xfmt, yfmt=fmt_number, logy=True):
    for name in IMPLS + sorted(set(data) - set(IMPLS)):
        if name not in data:
            continue
        xs, ys, failed = series(data[name], key)
        st = STYLE.get(name, {})
        ax.plot(xs, ys, label=name, linewidth=1.8, markersize=5, **st)
        for x in failed:
            ax.plot([x], [0], marker="x", color=st.get("color", "k"), markersize=9,
                    clip_on=False, transform=ax.get_xaxis_transform())
            ax.annotate(f"{name} failed", (x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 8), textcoords="offset points", ha="center", fontsize=7,
                        color=st.get("color", "k"))
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(yfmt))
    ax.set_xticks(xticks)
    ax.set_xticklabels([xfmt(x) for x in xticks], fontsize=8)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.12)
    ax.legend(fontsize=8)


def load_note(rows):
    loads = [r["load1"] for r in rows if r.get("load1") is not None]
    if not loads:
        return ""
    note = f"1-min load at the runs' start: {min(loads):.2f}-{max(loads):.2f} (2 cores)"
    other = [r["cpu"]["other"] for r in rows if isinstance(r.get("cpu"), dict)]
    if other:
        note += f"; other processes' CPU: {min(other)}-{max(other)} % of a core"
    return note


def plot_connections(rows, png):
    data = last_per_point(rows)
    xs = sorted({r["point"] for r in rows})
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    panel(a, data, lambda r: r["rps"], "calls/s", "connections (1 call in flight each, 64 B)",
          xs, human_count, logy=False)
    a.set_title("calls/s against connections")
    panel(b, data, lambda r: r["p99_us"], "p99 latency",
          "connections (1 call in flight each, 64 B)", xs, human_count, fmt_us)
    b.set_title("p99 latency against connections")
    fig.suptitle("Unary echo over loopback TCP, protobuf; one run per point. " + load_note(rows),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_payload(rows, png):
    data = last_per_point(rows)
    xs = sorted({r["point"] for r in rows})
    fig, (a, m, b) = plt.subplots(1, 3, figsize=(15, 4.2))
    xl = "payload (bytes each way, 4 connections × 16 in flight)"
    panel(a, data, lambda r: r["rps"], "calls/s", xl, xs, human_bytes)
    a.set_title("calls/s against payload")
    panel(m, data, lambda r: r["rps"] * r["payload"] / 1e6, "MB/s of payload, each way", xl, xs,
          human_bytes)
    m.set_title("payload throughput (calls/s × payload)")
    panel(b, data, lambda r: r["p99_us"], "p99 latency", xl, xs, human_bytes, fmt_us)
    b.set_title("p99 latency against payload")
    fig.suptitle("Unary echo over loopback TCP, protobuf; one run per point. " + load_note(rows),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def slope(points):
    """Least-squares bytes per session of (sessions, rss_kib) points."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 1024 if sxx else None


def plot_idle_rss(rows, png):
    by = {}
    for r in rows:
        by.setdefault(r["impl"], {})[r["sessions"]] = r
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in IMPLS + sorted(set(by) - set(IMPLS)):
        if name not in by:
            continue
        pts = sorted((s, r["server_rss_after_kib"]) for s, r in by[name].items())
        base = sum(r["server_rss_before_kib"] for r in by[name].values()) / len(by[name])
        xs = [0] + [s for s, _ in pts]
        ys = [base / 1024] + [k / 1024 for _, k in pts]
        k = slope(pts)
        label = f"{name} ({k:,.0f} B/session)" if k else name
        ax.plot(xs, ys, label=label, linewidth=1.8, markersize=5, **STYLE.get(name, {}))
    ax.set_xlabel("idle connected sessions (a fresh server per point)")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("Server memory against idle sessions (VmRSS; slope by least squares)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(rows, curve):
    """A markdown table of the points drawn: one row per point, the impls side by side."""
    data = last_per_point(rows)
    names = [n for n in IMPLS if n in data] + sorted(set(data) - set(IMPLS))
    xs = sorted({r["point"] for r in rows})
    fmt = human_count if curve == "connections" else human_bytes
    head = "connections" if curve == "connections" else "payload"
    cols = []
    for n in names:
        cols += [f"{n} calls/s", f"{n} p99 µs"]
        if curve == "payload":
            cols.append(f"{n} MB/s")
        cols.append(f"{n} server peak RSS")
    lines = [f"| {head} | " + " | ".join(cols) + " |",
             "|---:|" + "---:|" * len(cols)]
    for x in xs:
        cells = []
        for n in names:
            r = data[n].get(x)
            res = r and r.get("result")
            k = 4 if curve == "payload" else 3
            if r is None:
                cells += ["–"] * k
                continue
            if res is None:
                cells += [f"failed (exit {r['exit']})"] + [""] * (k - 2)
            else:
                e = f" ({res['errors']} errors)" if res.get("errors") else ""
                cells += [f"{res['rps']:,.0f}{e}", f"{res['p99_us']:,.0f}"]
                if curve == "payload":
                    cells.append(f"{res['rps'] * res['payload'] / 1e6:,.1f}")
            hwm = r.get("server_hwm_kib")
            cells.append(f"{hwm / 1024:,.1f} MiB" if hwm else "")
        lines.append(f"| {fmt(x)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "results")
    drawn = 0
    for curve, draw in (("connections", plot_connections), ("payload", plot_payload)):
        path = os.path.join(results, f"scaling-{curve}.jsonl")
        if not os.path.exists(path):
            print(f"# {path}: missing, skipped", file=sys.stderr)
            continue
        rows = read_jsonl(path)
        png = os.path.join(results, f"scaling-{curve}.png")
        draw(rows, png)
        drawn += 1
        print(f"# {png}", file=sys.stderr)
        print(f"\n{curve} ({load_note(rows)}):\n\n{table(rows, curve)}")
    path = os.path.join(results, "scaling-idle-rss.jsonl")
    if os.path.exists(path):
        png = os.path.join(results, "scaling-idle-rss.png")
        plot_idle_rss(read_jsonl(path), png)
        drawn += 1
        print(f"# {png}", file=sys.stderr)
    if not drawn:
        sys.exit(f"no scaling-*.jsonl in {results}")


if __name__ == "__main__":
    main()
