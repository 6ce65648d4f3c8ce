"""A newcomer follows the README top to bottom: every shell block runs, in order, in one
fresh folder, as written — with small samples of the shared datasets standing in for the
full ones (same layout, same paths relative to the folder), and without the commands
that cannot run here (`make`, the 18-minute `mrlkit train`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATASETS
from tests.test_docs import _fenced

ROOT = Path(__file__).resolve().parents[1]
SKIP = [r"^\s*make\b", r"^\s*mrlkit train\b"]
REMOTE = ("nomic-embed-text", "text-embedding-3", "mxbai")  # need Ollama or OpenAI

pytestmark = pytest.mark.slow


def _sample_datasets(target: Path) -> None:
    """Small copies of SciFact, STS-B and Banking77 in their own layouts."""
    for name in ("scifact", "stsb", "banking77"):
        if not (DATASETS / name).is_dir():
            pytest.skip(f"dataset {name} not present at {DATASETS}")
    sci, out = DATASETS / "scifact", target / "scifact"
    (out / "qrels").mkdir(parents=True)
    qrels = (sci / "qrels" / "test.tsv").read_text().splitlines()
    kept = qrels[1:41]
    docs = {line.split("\t")[1] for line in kept}
    queries = {line.split("\t")[0] for line in kept}
    with open(sci / "corpus.jsonl") as fh, open(out / "corpus.jsonl", "w") as w:
        for n, line in enumerate(fh):
            if json.loads(line)["_id"] in docs or n < 160:
                w.write(line)
    with open(sci / "queries.jsonl") as fh, open(out / "queries.jsonl", "w") as w:
        w.writelines(line for line in fh if json.loads(line)["_id"] in queries)
    (out / "qrels" / "test.tsv").write_text("\n".join([qrels[0], *kept]) + "\n")
    (target / "stsb").mkdir()
    for part in ("train", "dev", "test"):
        lines = (DATASETS / "stsb" / f"sts-{part}.csv").read_text().splitlines(keepends=True)
        (target / "stsb" / f"sts-{part}.csv").write_text("".join(lines[:150]))
    (target / "banking77").mkdir()
    shutil.copy(DATASETS / "banking77" / "categories.json", target / "banking77")
    for part, n in (("train", 800), ("test", 300)):
        lines = (DATASETS / "banking77" / f"{part}.csv").read_text().splitlines(keepends=True)
        (target / "banking77" / f"{part}.csv").write_text("".join(lines[:n + 1]))


def _script(block: str, home: Path) -> str:
    block = re.sub(r"\\\n\s*", " ", block)
    lines = [line for line in block.splitlines()
             if line.strip() and not any(re.search(p, line) for p in SKIP)]
    return "\n".join(lines).replace("~/", f"{home}/")


def test_the_readme_runs_top_to_bottom(tmp_path):
    work = tmp_path / "clone"
    work.mkdir()
    _sample_datasets(tmp_path / "shared" / "datasets")  # ../shared/datasets from the clone
    home = tmp_path / "home"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MRLKIT_STORE": "", "HOME": str(home)}
    env.pop("MRLKIT_STORE")
    env["MRLKIT_CACHE"] = os.environ.get("MRLKIT_CACHE") or str(
        Path.home() / ".cache" / "mrlkit" / "embeddings")
    ran = 0
    try:
        for lang, block in _fenced(ROOT / "README.md"):
            if lang == "python":
                if any(name in block for name in REMOTE):
                    continue
                command = [sys.executable, "-c", block]
            elif lang in ("", "bash", "sh"):
                script = _script(block, home)
                if "mrlkit" not in script:
                    continue
                command = ["bash", "-e", "-o", "pipefail", "-c", script]
            else:
                continue
            r = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                               timeout=900)
            assert r.returncode == 0, f"README block failed:\n{command[-1]}\n--- stderr:\n" \
                                      f"{r.stderr[-3000:]}"
            assert "Traceback" not in r.stderr
            ran += 1
    finally:
        subprocess.run(["mrlkit", "pg", "stop", "--data", f"{home}/.local/share/mrlkit/pg"],
                       env=env, capture_output=True, timeout=120)
    assert ran >= 6
    assert (work / "out.png").exists() and (work / "out.json").exists()
