"""Tables as a user reads them at 80 columns and in a pipe: ids, names, funnels and
numbers whole (never cut or folded), nothing past the width, no frame in a pipe, and
hints that are copied and pasted on one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from mrlkit import vectors
from mrlkit.registry import list_specs
from mrlkit.stores import open_store

FRAME = set("│┃┏┓┗┛━─┡┩╇╈┼")


def cli(*args, columns=80, cwd=None):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "COLUMNS": str(columns)})


def test_models_at_80_columns_keep_every_name_and_provider_whole():
    r = cli("models")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert not FRAME & set(r.stdout)  # piped: plain columns
    for spec in list_specs():
        row = next(line for line in lines if line.startswith(spec.name + " "))
        assert spec.provider in row and str(spec.native_dim) in row, row
    assert "384 only (not MRL)" in r.stdout


def test_sets_list_and_advise_keep_names_and_funnels_whole(tmp_path):
    store = str(tmp_path / "st")
    s = open_store(store)
    name = "a-rather-long-set-name-for-a-narrow-terminal"
    s.create_set(name, "all-MiniLM-L6-v2", allow_non_mrl=True)
    s.add(name, [f"d{i}" for i in range(150)],
          vectors.normalize(np.random.default_rng(0).normal(size=(150, 384))))
    s.close()
    r = cli("sets", "list", "--store", store)
    assert r.returncode == 0 and name in r.stdout, r.stdout
    r = cli("advise", "--set", name, "--target", "0.9", "--store", store)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    for funnel in ("384:binary:200,384", "192:binary:500,384", "96:float32:200,384"):
        assert funnel in r.stdout, r.stdout
