"""The STS-B-DIR data: ``<data_dir>/{train,dev,test}_new.tsv`` (GLUE STS-B rows, re-split; docs/datasets.md §1.4).

Each row is a sentence pair with a similarity score in [0, 5]. Sentences are tokenised (this folder's
``text.tokenize``, no NLTK data needed) and cut to ``--max_seq_len`` tokens; rows with an empty sentence or score
are skipped and counted, as the reference does. Get the files with ``python data/download_sts.py`` (DIR's split
by default, ``--split ranksim`` for RankSim/SRL's), or write a synthetic stand-in with ``python -m common.synthetic
stsb --out data/synthetic``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.runtime import sha256_of
from common.tools.datasplit import STSB_SPLITS
from text import PairSplit, index_sentences, read_pair_tsv

SPLIT_FILES = {"train": "train_new.tsv", "val": "dev_new.tsv", "test": "test_new.tsv"}
SCORE_RANGE = (0.0, 5.0)

# The published splits, each known by the SHA-256 of its three files (common.tools.datasplit.STSB_SPLITS): DIR's
# (YyzHarry/imbalanced-regression, sts-b-dir/glue_data/STS-B/), which DIR's STS-B row used, and RankSim's
# realisation, which RankSim and SRL published on.
DIR_SPLIT, RANKSIM_SPLIT = STSB_SPLITS["dir"], STSB_SPLITS["ranksim"]
# The references' hard-coded shot lists of 0.1-wide score bins (docs/datasets.md §1.4): on DIR's train_new they are
# exactly the bins with > 100 / 30–100 / < 30 training pairs; RankSim applies them to its own split unchanged.
REFERENCE_SHOT_BINS = {"many": [0, *range(10, 49, 2), 49], "medium": [2, 4, 6, 8, 27, 35, 37],
                       "few": [b for b in range(1, 48, 2) if b not in (27, 35, 37)]}
RECORD = "split.json"          # written by data/download_sts.py: which split the folder holds, with hashes
# Written by `python -m common.synthetic stsb` (common/synthetic/stsb.py) next to its made-up split files.
SYNTHETIC_MARKER = "SYNTHETIC_stsb.json"


def split_digests(data_dir) -> dict[str, str]:
    """``{file name: SHA-256}`` of the split files present in ``data_dir``."""
    data_dir = Path(data_dir)
    return {name: sha256_of(data_dir / name) for name in SPLIT_FILES.values() if (data_dir / name).is_file()}


def _recreated(data_dir: Path, digests: dict) -> dict | None:
    """The record ``data/download_sts.py --make_split`` wrote, if the files are still the ones it wrote."""
    try:
        saved = json.loads((data_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) and saved.get("split") == "recreated" and saved.get("sha256") == digests \
        else None


def split_held(data_dir) -> str | None:
    """Which split ``data_dir`` holds: ``'dir'`` or ``'ranksim'`` (the published files, by SHA-256, however they
    got there), ``'recreated'`` (as ``data/download_sts.py --make_split`` recorded it, hashes matching), else None."""
    digests = split_digests(data_dir)
    for key, published in STSB_SPLITS.items():
        if digests == published["sha256"]:
            return key
    return "recreated" if _recreated(Path(data_dir), digests) is not None else None


def closest_published(digests: dict) -> tuple[str, list[str]] | None:
    """The published split that most of the files present match, and the files of it that are absent or differ
    (None if no file matches any published one)."""
    def matches(key):
        return sum(digests.get(name) == digest for name, digest in STSB_SPLITS[key]["sha256"].items())
    key = max(STSB_SPLITS, key=matches)
    if matches(key) == 0:
        return None
    return key, [name for name, digest in STSB_SPLITS[key]["sha256"].items() if digests.get(name) != digest]


def describe_split(data_dir) -> str:
    """One log line: which published split ``data_dir`` holds (DIR's, RankSim/SRL's, or neither); a folder that
    is one or two files away from a published split names them."""
    data_dir = Path(data_dir)
    digests = split_digests(data_dir)
    held = split_held(data_dir)
    if held == "dir":
        return (f"split {data_dir}: DIR's published STS-B-DIR split ({DIR_SPLIT['repo']} at "
                f"{DIR_SPLIT['commit'][:7]}, SHA-256 verified), the split of DIR's published STS-B numbers")
    if held == "ranksim":
        return (f"split {data_dir}: RankSim/SRL's published split of STS-B-DIR ({RANKSIM_SPLIT['repo']} at "
                f"{RANKSIM_SPLIT['commit'][:7]}, SHA-256 verified), the split of RankSim's and SRL's published "
                "numbers, NOT DIR's (their test sets share 168 of 1,000 pairs)")
    if held == "recreated":
        return (f"split {data_dir}: a split re-created from GLUE by data/download_sts.py --make_split (seed "
                f"{_recreated(data_dir, digests).get('seed')}); NOT a published split, numbers are not comparable "
                "with the papers'")
    if (data_dir / SYNTHETIC_MARKER).is_file():
        return (f"split {data_dir}: the synthetic stand-in written by `python -m common.synthetic stsb` (made-up "
                f"sentences, {SYNTHETIC_MARKER}), not STS-B: its numbers show the pipeline at work, not a method's "
                "STS-B-DIR result (get DIR's split with `python data/download_sts.py`)")
    near = closest_published(digests)
    if near is None:
        return (f"split {data_dir}: NOT a published STS-B-DIR split (no file's SHA-256 is one of DIR's or "
                "RankSim/SRL's, and no data/download_sts.py --make_split record matches); numbers are not comparable "
                "with the papers' (get DIR's with `python data/download_sts.py`)")
    key, differing = near
    published = STSB_SPLITS[key]
    label, option = published["label"], "" if key == "dir" else f" --split {key}"
    what = "; ".join(f"{name} is absent" if name not in digests else
                     f"{name} differs from {label} published file (SHA-256 {digests[name]}, expected "
                     f"{published['sha256'][name]})" for name in differing)
    matching = [name for name in published["sha256"] if name not in differing]
    return (f"split {data_dir}: NOT a published STS-B-DIR split: {what}, though {' and '.join(matching)} "
            f"{'is' if len(matching) == 1 else 'are'} {label}; numbers are not comparable with the papers' (get "
            f"the published files again with `python data/download_sts.py{option} --overwrite`)")


def load_splits(data_dir, max_seq_len: int = 40) -> dict[str, PairSplit]:
    """``{'train', 'val', 'test'}`` tokenised splits of ``data_dir``."""
    return {split: read_pair_tsv(Path(data_dir) / name, max_seq_len, score_range=SCORE_RANGE)
            for split, name in SPLIT_FILES.items()}


class PairDataset(Dataset):
    """One split as token ids; each sample is a dict.

    ``input``: ``(ids1, ids2)`` int64 arrays of the two sentences; ``target``: (1,) float32 score (0–5, the
    raw label: the model predicts score/5 internally and returns the score); ``weight``: (1,) float32
    (re-weighting/LDS on the training split, else 1).
    """

    def __init__(self, split: PairSplit, vocabulary: list[str], weights=None):
        self.ids1 = index_sentences(split.sentences1, vocabulary)
        self.ids2 = index_sentences(split.sentences2, vocabulary)
        self.scores = split.scores.astype(np.float32)
        self.weights = np.ones(len(split), np.float32) if weights is None else np.asarray(weights, np.float32)

    def __len__(self):
        return len(self.scores)

    def __getitem__(self, i):
        return {"input": (self.ids1[i], self.ids2[i]), "target": torch.tensor([self.scores[i]]),
                "weight": torch.tensor([self.weights[i]])}


def pad(sequences) -> tuple[torch.Tensor, np.ndarray]:
    """int64 arrays → ``(tokens (B, T) padded with 0, lengths (B,))``. The lengths are a NumPy array, which the
    loop does not move to the device: the packed LSTM reads them on the host."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    tokens = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        tokens[row, :len(sequence)] = torch.from_numpy(sequence)
    return tokens, lengths


def collate(samples) -> dict:
    """A batch: ``input = (tokens1 (B, T1), lengths1 (B,), tokens2 (B, T2), lengths2 (B,))`` (lengths: NumPy,
    on the host), ``target`` (B, 1) scores, ``weight`` (B, 1)."""
    tokens1, lengths1 = pad([s["input"][0] for s in samples])
    tokens2, lengths2 = pad([s["input"][1] for s in samples])
    return {"input": (tokens1, lengths1, tokens2, lengths2),
            "target": torch.stack([s["target"] for s in samples]),
            "weight": torch.stack([s["weight"] for s in samples])}
