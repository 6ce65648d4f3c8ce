"""Vector math: hand-checked cases and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mrlkit import errors, vectors

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


def matrices(min_rows=1, max_rows=8, min_dim=2, max_dim=40):
    return st.tuples(st.integers(min_rows, max_rows), st.integers(min_dim, max_dim)).flatmap(
        lambda s: arrays(np.float32, s, elements=finite))


@given(matrices())
def test_normalised_rows_have_unit_norm_or_stay_zero(x):
    n = np.linalg.norm(vectors.normalize(x), axis=1)
    raw = np.linalg.norm(x.astype(np.float64), axis=1)
    assert np.all((np.abs(n - 1) < 1e-4) | ((raw < 1e-30) & (n == 0)))


@given(matrices(), st.data())
def test_truncate_then_normalise_equals_normalise_then_truncate(x, data):
    dim = data.draw(st.integers(1, x.shape[1]))
    assume(np.all(np.linalg.norm(x[:, :dim].astype(np.float64), axis=1) > 1e-3))
    a = vectors.truncate(x, dim)
    b = vectors.truncate(vectors.normalize(x), dim)
    np.testing.assert_allclose(a, b, atol=1e-5)


@given(matrices(min_rows=2, max_rows=30, min_dim=8, max_dim=70), st.data())
def test_binary_ranking_equals_sign_agreement_ranking(docs, data):
    q = data.draw(arrays(np.float32, (1, docs.shape[1]), elements=finite))
    dim = docs.shape[1]
    scores = vectors.score(q, vectors.quantize(docs, "binary"), "binary", dim=dim)[0]
    agreement = ((q > 0) == (docs > 0)).sum(axis=1)
    np.testing.assert_array_equal(scores, 2 * agreement - dim)


@given(matrices(min_rows=3, max_rows=20, min_dim=4, max_dim=32))
@settings(max_examples=50)
def test_int8_scores_match_dequantised_dot(x):
    cal = vectors.Int8Calibration.fit(x)
    codes = vectors.quantize(x, "int8", cal)
    q = x[:2]
    expected = q @ vectors.dequantize_int8(codes, cal).T
    np.testing.assert_allclose(vectors.dot_int8(q, codes, cal), expected,
                               rtol=1e-3, atol=1e-2 * (1 + np.abs(expected).max()))


def test_int8_reconstruction_is_close_on_unit_vectors():
    x = vectors.normalize(np.random.default_rng(0).normal(size=(500, 64)))
    cal = vectors.Int8Calibration.fit(x)
    back = vectors.dequantize_int8(vectors.quantize(x, "int8", cal), cal)
    assert np.abs(back - x).max() <= cal.step.max() / 2 + 1e-6
    # calibration round-trips and its prefix serves a prefix view
    again = vectors.Int8Calibration.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again.lo, cal.lo)
    assert cal.prefix(16).dim == 16


def test_int8_clips_values_outside_the_calibration():
    cal = vectors.Int8Calibration(np.zeros(2, np.float32), np.ones(2, np.float32))
    assert vectors.quantize(np.array([[-5.0, 5.0]]), "int8", cal).tolist() == [[-128, 127]]


def test_nan_and_inf_are_refused():
    for bad in (np.nan, np.inf):
        with pytest.raises(errors.InvalidVectorError, match="NaN or inf"):
            vectors.normalize(np.array([[1.0, bad]]))


def test_truncate_refuses_bad_dims():
    x = np.ones((2, 4))
    for dim in (0, -1, 5):
        with pytest.raises(errors.DimensionError):
            vectors.truncate(x, dim)


def test_layer_norm_has_zero_mean_unit_variance():
    x = np.random.default_rng(1).normal(3, 5, size=(4, 32))
    ln = vectors.layer_norm(x)
    np.testing.assert_allclose(ln.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(ln.std(axis=1), 1, atol=1e-3)


def test_quantize_shapes_and_bytes():
    x = vectors.normalize(np.random.default_rng(2).normal(size=(3, 100)))
    assert vectors.quantize(x, "float16").dtype == np.float16
    assert vectors.quantize(x, "binary").shape == (3, 13)
    for p in vectors.PRECISIONS:
        assert vectors.quantize(x, p).nbytes == 3 * vectors.bytes_per_vector(100, p)
    with pytest.raises(errors.InvalidVectorError, match="precision must be one of"):
        vectors.quantize(x, "int4")


@given(st.integers(1, 40), st.integers(1, 200))
def test_hamming_matches_bit_count(nq, nbytes):
    rng = np.random.default_rng(nq * 1000 + nbytes)
    q = rng.integers(0, 256, size=(nq, nbytes), dtype=np.uint8)
    d = rng.integers(0, 256, size=(7, nbytes), dtype=np.uint8)
    expected = np.unpackbits(q[:, None, :] ^ d[None], axis=2).sum(axis=2)
    np.testing.assert_array_equal(vectors.hamming(q, d), expected)


def test_top_k_is_sorted_with_stable_ties():
    s = np.array([[0.5, 0.9, 0.5, 0.1, 0.9]])
    idx, sc = vectors.top_k(s, 4)
    assert idx.tolist() == [[1, 4, 0, 2]] and sc.tolist() == [[0.9, 0.9, 0.5, 0.5]]
    assert vectors.top_k(s, 10)[0].shape == (1, 5)
