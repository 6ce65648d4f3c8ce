"""Markdown tables of a benchmarks/search.py result, as docs/benchmarks.md shows them.

    python benchmarks/report.py benchmarks/results/search-1m.json
"""

from __future__ import annotations

import json
import sys


def table(section: dict) -> str:
    head = ("| method | recall@10 | p50 ms | p95 ms | batch QPS | RSS MB | build s "
            "| first query s | reads/query | overhead p50 ms |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for m in section["methods"]:
        build = m.get("build_s")
        rows.append(
            f"| {m['name']} | {m['recall@10']:.3f} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} "
            f"| {m['qps']:,.0f} | {m['rss_mb']:,.0f} | "
            f"{'—' if not build else f'{build:.1f}'} | {m['first_query_s']:.2f} | "
            f"{m.get('reads_per_query', '—')} | {m.get('overhead_p50_ms', '—')} |")
    return head + "\n".join(rows)


def targets(t: dict | None) -> str:
    if not t or not t.get("best"):
        return "no mrlkit method reached recall@10 ≥ 0.98" if t else ""
    return (f"Against **{t['reference']}** (the first efSearch reaching recall@10 ≥ 0.98), "
            f"the fastest mrlkit method at ≥ 0.98, **{t['best']}**: p50 ×{t['p50_ratio']}, "
            f"batch QPS ×{t['qps_ratio']}, resident memory ×{t['memory_ratio']}, "
            f"build ×{t['build_ratio']}, first query {t['first_query_s']} s after start.")


def main() -> None:
    report = json.load(open(sys.argv[1]))
    sections = [report] + [v for k, v in report.items() if k.startswith("scifact_")]
    for s in sections:
        if not s.get("methods"):
            continue
        print(f"### {s['dataset']}: {s['n']:,} × {s['dim']}, {s['queries']} queries\n")
        print(table(s))
        ingest = s.get("ingest_vectors_per_s")
        if ingest:
            print(f"\nIngest into the local store, vectors/s: {ingest}")
        print("\n" + targets(s.get("targets")) + "\n")


if __name__ == "__main__":
    main()
