"""Benchmarks behind `hes bench ...` (figures as JSON on the last line)."""
