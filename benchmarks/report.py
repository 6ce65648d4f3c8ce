"""Markdown tables of a benchmarks/search.py result, as docs/benchmarks.md shows them.

    python benchmarks/report.py benchmarks/results/search-1m.json
"""

from __future__ import annotations

import json
import sys


# the peers search.py sweeps, by family (benchmarks/peers.py)
PEERS = ("faiss HNSW", "faiss HNSW SQ8", "binary + rescore", "Qdrant Edge BQ")


def report_targets(methods: list[dict], target: float, default: float = 0.95) -> dict:
    """At ``target``: each peer at its first setting reaching it, the fastest of them,
    and mrlkit's default searches against it and against faiss HNSW-flat."""
    first = {}
    for m in methods:
        fam = m.get("family")
        if fam in PEERS and fam not in first and m["recall@10"] >= target:
            first[fam] = m
    ours_family = "mrlkit default" + ("" if target == default else " 0.99")
    ours = [m for m in methods if m.get("family") == ours_family]
    out: dict = {"target": target,
                 "peers": {f: {k: m[k] for k in ("name", "recall@10", "p50_ms", "qps",
                                                   "rss_mb")} for f, m in first.items()}}
    if not first:
        return out
    fastest = min(first.values(), key=lambda m: m["p50_ms"])
    flat = first.get("faiss HNSW")
    out["fastest_peer"] = fastest["name"]
    out["mrlkit"] = []
    for m in ours:
        row = {"name": m["name"], "ran": m.get("ran"), "recall@10": m["recall@10"],
               "meets_target": m["recall@10"] >= target,
               "p50_vs_fastest_peer": round(m["p50_ms"] / fastest["p50_ms"], 2),
               "qps_vs_fastest_peer": round(m["qps"] / fastest["qps"], 2)}
        if flat:
            row.update({"rss_vs_hnsw_flat": round(m["rss_mb"] / flat["rss_mb"], 3),
                        "qps_vs_hnsw_flat": round(m["qps"] / flat["qps"], 2),
                        "p50_vs_hnsw_flat": round(m["p50_ms"] / flat["p50_ms"], 2)})
        out["mrlkit"].append(row)
    return out


def plot_recall_latency(report: dict, path: str) -> None:
    """Recall@10 against p50 latency; points are numbered, names and resident memory
    listed beside the plot (labels next to close points would overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(1, 2, figsize=(14, 6.5), width_ratios=[3, 2.4])
    names = []
    for i, m in enumerate(report["methods"], 1):
        family = ("qdrant" if "qdrant" in m["name"].lower() else
                  "mrlkit" if m["name"].startswith("mrlkit") else
                  "faiss" if m["name"].startswith("faiss") else "numpy")
        colour = {"mrlkit": "tab:red", "faiss": "tab:blue", "numpy": "tab:gray",
                  "qdrant": "tab:purple"}[family]
        ax.scatter(m["p50_ms"], m["recall@10"], color=colour, s=40)
        ax.annotate(str(i), (m["p50_ms"], m["recall@10"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points", color=colour)
        names.append((i, m["name"] + (f"  [{m['rss_mb']:,.0f} MB]" if "rss_mb" in m else ""),
                      colour))
    ax.set_xscale("log")
    ax.set_xlabel("single-query p50 latency (ms, log scale)")
    ax.set_ylabel("recall@10 vs exact float32")
    ax.set_title(f"Recall against latency — n={report['n']:,}, dim={report['dim']}\n"
                 "(red: mrlkit, blue: faiss, grey: numpy; [resident memory])", fontsize=10)
    ax.grid(True, alpha=0.3)
    side.axis("off")
    for row, (i, name, colour) in enumerate(names):
        side.text(0, 1 - row / max(len(names), 20), f"{i:>2}  {name}", color=colour,
                  fontsize=7.5, family="monospace", va="top", transform=side.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(section: dict) -> str:
    head = ("| method | recall@10 | p50 ms | p95 ms | batch QPS | RSS MB | build/tune s "
            "| overhead p50 ms |\n|---|---|---|---|---|---|---|---|\n")
    rows = []
    for m in section["methods"]:
        build = m.get("build_s")
        name = m["name"] + (f" → `{m['ran']}`" if m.get("ran") and "default" in m["name"]
                            else "")
        rows.append(
            f"| {name} | {m['recall@10']:.3f} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} "
            f"| {m['qps']:,.0f} | {m['rss_mb']:,.0f} | "
            f"{'—' if not build else f'{build:.1f}'} | {m.get('overhead_p50_ms', '—')} |")
    return head + "\n".join(rows)


def targets(t: dict) -> str:
    lines = [f"At recall@10 ≥ {t['target']}: each peer at its first setting reaching it —"]
    for fam, m in t.get("peers", {}).items():
        lines.append(f"  {fam}: {m['name']} ({m['recall@10']:.3f}, p50 {m['p50_ms']:.3f} ms, "
                     f"{m['qps']:,.0f} QPS, {m['rss_mb']:,.0f} MB);")
    if not t.get("peers"):
        return f"At recall@10 ≥ {t['target']}: no peer reached it."
    lines.append(f"  the fastest: **{t['fastest_peer']}**.")
    for m in t.get("mrlkit", []):
        lines.append(
            f"- {m['name']} ran `{m['ran']}`: recall {m['recall@10']:.3f} "
            f"({'meets' if m['meets_target'] else 'misses'} the target); p50 ×"
            f"{m['p50_vs_fastest_peer']} the fastest peer's, batch QPS ×"
            f"{m['qps_vs_fastest_peer']}"
            + (f"; against faiss HNSW-flat: p50 ×{m['p50_vs_hnsw_flat']}, QPS ×"
               f"{m['qps_vs_hnsw_flat']}, resident memory ×{m['rss_vs_hnsw_flat']}"
               if "rss_vs_hnsw_flat" in m else ""))
    return "\n".join(lines)


def main() -> None:
    report = json.load(open(sys.argv[1]))
    sections = [report] + [v for k, v in report.items()
                           if k == "real" or k.startswith("scifact_")]
    for s in sections:
        if not s.get("methods"):
            continue
        print(f"### {s['dataset']}: {s['n']:,} × {s['dim']}, {s['queries']} queries\n")
        print(table(s))
        for t in (s.get("targets") or {}).values():
            if isinstance(t, dict) and "target" in t:
                print("\n" + targets(t))
        print()


if __name__ == "__main__":
    main()
