"""Benchmarks and the synthetic-model helpers tests share."""
