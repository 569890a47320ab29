"""The benchmark suite of issue 7: ``python -m benchmarks`` (see benchmarks/README.md)."""
