"""Models shared by several benchmarks."""
