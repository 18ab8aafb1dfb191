"""Benchmarks: ``bench/run`` (or ``python -m bench``) prints figures; nothing here is a test."""
