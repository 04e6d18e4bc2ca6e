"""Shared code of the DIR benchmarks: losses, LDS/FDS, metrics, the training engine, synthetic data.

Every dataset folder (``imdb-wiki-dir/``, ``agedb-dir/``, ``nyud2-dir/``, ``sts-b-dir/``) imports from here;
the behaviour of each method is specified in the project's methods document and the deliberate
differences from the public reference code are listed in ``docs/reference-differences.md``.
"""
