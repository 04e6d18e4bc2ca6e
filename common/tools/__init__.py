"""Tools around the benchmarks, each a command: ``python -m common.tools.pack`` (HDF5 image packs),
``common.tools.datasplit`` (the DIR split procedure behind the age ``data/preprocess_*.py`` scripts),
``common.tools.report`` (runs side by side, per-label error plots) and ``common.tools.demo`` (``make demo``).
Synthetic data sets have their own package, ``python -m common.synthetic``."""
