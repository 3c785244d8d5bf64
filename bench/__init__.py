"""Benchmark harness: `make bench` (bench/run.py) and its wrk and pgbench scripts."""
