"""Benchmarks (commands, not tests): python -m pycnn.bench.ops ..."""
