"""Fakes and factories shipped with stomper, for its tests, its benchmarks and its demo."""
