"""What every DIR benchmark shares, in three rooms (README "Layout"):

* the loop: ``trainer`` (Task, Trainer), ``cli``, ``runtime``, ``checkpointing``, ``distributed``, ``errors``;
* the methods: ``losses/``, ``objective``, ``optim``, ``lds``, ``fds``, ``gmm``, ``bins``, ``metrics``, ``depth``,
  ``checks``, ``models/``, and ``age`` (the base of the two age benchmarks);
* tools: ``synthetic/`` (``python -m common.synthetic``) and ``tools/`` (pack, datasplit, report, demo).

Every dataset folder (``imdb-wiki-dir/``, ``agedb-dir/``, ``nyud2-dir/``, ``sts-b-dir/``) imports from here; nothing
here imports a dataset folder. Each method's behaviour is written down in ``docs/methods.md``; the deliberate
differences from the public reference code are listed in ``docs/reference-differences.md``.
"""
