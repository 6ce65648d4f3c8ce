"""Measure what truncation and quantisation cost, on real data."""
