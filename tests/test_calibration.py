"""int8 embeddings outside a store: codes from a calibration that does not depend on the
batch, reproducible across calls and processes, named and saved with the output."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mrlkit import Embedder, errors, vectors
from mrlkit.calibration import NamedCalibration, reference_calibration

MODEL = "all-MiniLM-L6-v2"
DOCS = ["Matryoshka dolls nest inside each other.", "Green tea is brewed below boiling.",
        "The Moon orbits the Earth about once every 27 days."]

pytestmark = pytest.mark.slow


def mrlkit(*args, cwd, input=None):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          text=True, cwd=cwd, input=input, timeout=600)


def test_int8_codes_do_not_depend_on_the_batch():
    e = Embedder(MODEL, precision="int8")
    query = e.embed(["what is a matryoshka doll?"], kind="query")  # one text first
    a = e.embed(DOCS)
    b = Embedder(MODEL, precision="int8").embed(DOCS[::-1] + ["something else"])[:3][::-1]
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(query)) > 50  # a real code, not 384 times -128
    # codes from two calls compare: int8 cosines follow the float ones
    f = Embedder(MODEL).embed(DOCS)
    cal = e.calibration.calibration
    deq = vectors.normalize(vectors.dequantize_int8(a, cal))
    np.testing.assert_allclose(deq @ deq.T, f @ f.T, atol=0.02)
    assert e.calibration_name == reference_calibration(MODEL, 384).name


def test_a_calibration_must_fit_the_model_and_dimension(tmp_path):
    named = reference_calibration(MODEL, 384)
    path = named.save(tmp_path / "cal.json")
    assert Embedder(MODEL, precision="int8", calibration=path).calibration_name == named.name
    with pytest.raises(errors.InvalidInputError, match="384 dimensions, not 128"):
        Embedder(MODEL, 128, "int8", allow_non_mrl=True, calibration=path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(errors.InvalidInputError, match="not an mrlkit int8 calibration"):
        NamedCalibration.load(tmp_path / "bad.json")


def test_the_cli_names_and_saves_its_calibration(tmp_path):
    r1 = mrlkit("embed", "--input", "-", "--precision", "int8", cwd=tmp_path, input="a text\n")
    r2 = mrlkit("embed", "--input", "-", "--precision", "int8", cwd=tmp_path,
                input="another\na text\n")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    one = json.loads(r1.stdout)
    again = json.loads(r2.stdout.splitlines()[1])
    assert one["embedding"] == again["embedding"] and len(set(one["embedding"])) > 50
    assert one["calibration"] == again["calibration"].strip() and "-d384-ref" in one["calibration"]
    r = mrlkit("embed", *DOCS, "--precision", "int8", "--output", "x.npy", cwd=tmp_path)
    assert r.returncode == 0 and "x.calibration.json" in r.stderr, r.stderr
    saved = NamedCalibration.load(tmp_path / "x.calibration.json")
    r = mrlkit("embed", *DOCS, "--precision", "int8", "--output", "y.npy",
               "--calibration", "x.calibration.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy"))
    assert saved.name == one["calibration"]
