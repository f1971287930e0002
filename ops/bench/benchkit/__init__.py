"""Pieces the benchmarks in ops/bench/ share."""
