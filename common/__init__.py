"""Shared code of the DIR benchmarks: losses, LDS/FDS, label bins, metrics, the training engine, synthetic data.

Every dataset folder (``imdb-wiki-dir/``, ``agedb-dir/``, ``nyud2-dir/``, ``sts-b-dir/``) imports from here.
Each method's behaviour is written down in ``docs/methods.md``; the deliberate differences from the public
reference code are listed in ``docs/reference-differences.md``.
"""
