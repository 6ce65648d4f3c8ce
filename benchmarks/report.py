"""Markdown tables of a benchmarks/search.py result, as docs/benchmarks.md shows them.

    python benchmarks/report.py benchmarks/results/search-1m.json
"""

from __future__ import annotations

import json
import sys


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
