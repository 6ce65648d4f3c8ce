"""`mrlkit serve` under a mixed, partly hostile load on 127.0.0.1:
8 writers (a text the server embeds and three vectors per request), 8 filtered searchers
(one query in four is text), one 1,000-text embeddings request, and 64 sockets that hold
connections without finishing a request (half idle, half trickling a body without a
key), for ``--seconds``. Reports 5xx (target 0), acknowledged documents missing
afterwards (target 0), small requests' p50/p99/max (target p99 < 1 s) and a PNG of
latency over time.

    python benchmarks/hostile.py --seconds 60 --output benchmarks/results/hostile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import live_server  # noqa: E402
from tests.mixed_load import run  # noqa: E402

WRITE, READ = "bench-write-key", "bench-read-key"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--output", default="benchmarks/results/hostile.json")
    args = ap.parse_args()
    from mrlkit.stores import open_store

    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        srv = live_server.start(store, keys=f"{WRITE}:write,{READ}:read", key=WRITE)
        try:
            got = run(srv.url, srv.port, WRITE, READ, seconds=args.seconds)
        finally:
            srv.stop()
        docs = open_store(store).get("load", got["acked"])
    got["acknowledged"] = len(got["acked"])
    got["lost"] = sum(d is None for d in docs)
    series = got.pop("series")
    got.pop("acked")
    got["targets"] = {"server_errors == 0": got["server_errors"] == 0,
                      "lost == 0": got["lost"] == 0,
                      "small p99 < 1000 ms": got["small_p99_ms"] < 1000}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(got, indent=2) + "\n")
    _plot(series, got, out.with_suffix(".png"))
    print(json.dumps(got, indent=2))


def _plot(series: list, got: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for kind, colour in (("add", "tab:blue"), ("search", "tab:green")):
        pts = [(t, ms) for t, ms, k in series if k == kind]
        if pts:
            ax.scatter(*zip(*pts), s=4, alpha=0.5, label=kind, color=colour)
    large = [(t, ms) for t, ms, k in series if k == "large"]
    if large:
        t, ms = large[0]
        ax.axvspan(t, t + ms / 1000, color="tab:red", alpha=0.12,
                   label=f"1,000-text request ({ms / 1000:.0f} s)")
    ax.axhline(1000, color="grey", ls="--", lw=1, label="1 s")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("request latency (ms)")
    ax.set_title(f"mrlkit serve, mixed load + {got['hostile_sockets']} hostile sockets: "
                 f"p99 {got['small_p99_ms']:.0f} ms, 5xx {got['server_errors']}, "
                 f"lost {got['lost']}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
