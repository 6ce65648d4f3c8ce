"""Reports: Rich tables, JSON and CSV files, and PNG plots a person can read.

Example::

    >>> write_report(report, json_path="out.json", csv_path="out.csv",
    ...              plot_path="out.png")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import csv
import json
from pathlib import Path

from rich.table import Table

PRECISION_STYLE = {"float32": ("tab:blue", "o"), "float16": ("tab:green", "s"),
                   "int8": ("tab:orange", "^"), "binary": ("tab:red", "v")}


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Write ``data`` as indented JSON, creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write result rows as CSV (columns: the union of keys, in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)


def retrieval_table(report: dict[str, Any]) -> Table:
    """The retrieval report as a Rich table."""
    mark = " (not MRL-trained: truncation measured)" if not report["supports_mrl"] else ""
    table = Table(title=f"{report['model']} on {report['dataset']} ({report['split']}, "
                        f"{report['queries']} queries){mark}")
    table.add_column("setting", overflow="fold", min_width=14)
    # short headers: the table must fit an 80-column terminal
    for col in ("nDCG@10", "retain", "R@100", "MRR@10", "B/vec", "p50 ms"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        setting = r["funnel"] or f"{r['precision']}@{r['dim']}"
        table.add_row(setting, f"{r['ndcg@10']:.4f}", f"{r['retention']:.1%}",
                      f"{r['recall@100']:.4f}", f"{r['mrr@10']:.4f}",
                      str(r["bytes_per_vector"]), f"{r['p50_ms']:.2f}")
    return table


def cell(column: str, value: object) -> str:
    """One table cell as a person reads it: retention as a percentage (JSON keeps the
    fraction), other floats to 4 decimals, yes/no for booleans, '—' for nothing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and len(value) == 2 and "ci" in column:  # an interval
        lo, hi = (cell(column.replace("_ci", ""), float(v)) for v in value)
        return f"{lo}–{hi}"
    if isinstance(value, float):
        return f"{value:.1%}" if "retention" in column or column == "reference" \
            else f"{value:.4f}"
    return str(value)


def simple_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    """A table of ``columns`` of ``rows`` (see :func:`cell`)."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[cell(c, r[c]) for c in columns])
    return table


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and quality
    (higher), sorted by cost.

    Example::

        >>> pareto([(1, 0.5), (2, 0.4), (3, 0.9)])
        [0, 2]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    best, front = float("-inf"), []
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_retrieval(report: dict[str, Any], path: str | Path, metric: str = "ndcg@10") -> list[Path]:
    """Two PNGs: ``metric`` against dimension (a line per precision) at ``path`` itself,
    and quality against bytes per vector with the Pareto frontier marked beside it
    (``<stem>-pareto.png``). Returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [r for r in report["results"] if r["funnel"] is None]
    title = f"{report['model']} on {report['dataset']} ({report['split']})"
    if not report["supports_mrl"]:
        title += " — not MRL-trained"

    fig, ax = plt.subplots(figsize=(8, 5))
    for precision, (colour, marker) in PRECISION_STYLE.items():
        rows = sorted((r for r in plain if r["precision"] == precision), key=lambda r: r["dim"])
        if rows:
            ax.plot([r["dim"] for r in rows], [r[metric] for r in rows], marker=marker,
                    color=colour, label=precision)
    dims = sorted({r["dim"] for r in plain})
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("dimension (prefix length)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by dimension and precision\n{title}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="precision")
    fig.tight_layout()
    first = path
    fig.savefig(first, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    rows = report["results"]
    pts = [(r["bytes_per_vector"], r[metric]) for r in rows]
    for r, (x, y) in zip(rows, pts):
        colour, marker = PRECISION_STYLE[r["precision"]] if not r["funnel"] else ("black", "*")
        ax.scatter(x, y, color=colour, marker=marker, s=60 if r["funnel"] else 35)
    front = pareto(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="gray",
            label="Pareto frontier")
    for i in front:
        r = rows[i]
        label = r["funnel"] or f"{r['precision']}@{r['dim']}"
        ax.annotate(label, pts[i], fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector searched (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"Quality against storage\n{title}", fontsize=10)
    shown = {r["precision"] for r in rows if not r["funnel"]}  # no legend without points
    handles = [Line2D([], [], color=c, marker=m, linestyle="", label=p)
               for p, (c, m) in PRECISION_STYLE.items() if p in shown]
    if any(r["funnel"] for r in rows):
        handles.append(Line2D([], [], color="black", marker="*", linestyle="",
                                  label="funnel"))
    handles.append(Line2D([], [], color="gray", linestyle="--", label="Pareto frontier"))
    ax.legend(handles=handles, fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    second = path.with_name(path.stem + "-pareto.png")
    fig.savefig(second, dpi=120)
    plt.close(fig)
    return [first, second]


def plot_curve(rows: list[dict[str, Any]], metric: str | list[str], path: str | Path,
               title: str) -> Path:
    """A single metric against dimension (similarity, classification reports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    metrics = [metric] if isinstance(metric, str) else list(metric)
    for m in metrics:
        ax.plot([r["dim"] for r in rows], [r[m] for r in rows], marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks([r["dim"] for r in rows], [str(r["dim"]) for r in rows])
    ax.set_xlabel("dimension (prefix length)")
    ax.set_ylabel(" / ".join(metrics))
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
