"""End to end on a tiny synthetic STS-B-DIR (and a few iterations on the real split when it is present): every
method, results, evaluation (also the reference's --eval_model form), exact resume, RRT, bad input, the report.

Each run is a 2 × 8 BiLSTM on 160 training pairs with a 6-d GloVe file written here, on CPU.
"""
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.bins import STSB_BINS
from common.metrics import correlation_shot_metrics
from folders import folder_main, folder_module
from training_log import logged_components

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "sts-b-dir"
HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
WORDS = ["man", "woman", "dog", "cat", "plays", "eats", "guitar", "food", "runs", "park", "red", "small"]
SHOTS = ["--many_shot_thr", "5", "--low_shot_thr", "2"]          # the synthetic data has ~3 pairs per 0.1 bin
TINY = ["--d_hid", "8", "--batch_size", "16", "--lr", "3e-3", "--val_interval", "5", "--max_vals", "2",
        "--print_freq", "100", "--workers", "0", *SHOTS]

sts_main = folder_main("sts-b-dir")


def synthetic_split(rng, n, start=0):
    """Pairs of 3–7 words; the score grows with the word overlap, rounded to the 0.2 grid of averaged ratings."""
    rows = []
    for i in range(n):
        a = list(rng.choice(WORDS, rng.integers(3, 8)))
        b = list(rng.choice(WORDS, rng.integers(3, 8)))
        overlap = len(set(a) & set(b)) / len(set(a) | set(b))
        score = float(np.clip(np.round((5 * overlap + rng.normal(0, 0.4)) / 0.2) * 0.2, 0, 5))
        sentence = lambda words: (" ".join(words).capitalize() + ".").replace("dog ", "dog's ")
        rows.append(f"{start + i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{sentence(a)}\t"
                    f"{sentence(b)}\t{score:.3f}\n")
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stsb")
    data_dir = root / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train_new.tsv", 160), ("dev_new.tsv", 40), ("test_new.tsv", 40)):
        (data_dir / name).write_text(HEADER + "".join(synthetic_split(rng, n)), encoding="utf-8")
    vectors = np.random.default_rng(1).standard_normal((len(WORDS) + 2, 6))
    glove = root / "glove.6d.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{v:.4f}' for v in vec)}\n"
                             for w, vec in zip(WORDS + [".", "'s"], vectors)), encoding="utf-8")
    return data_dir, glove


def train(data, store_root, name, *flags):
    data_dir, glove = data
    argv = ["--data_dir", str(data_dir), "--word_embs_file", str(glove), "--store_root", str(store_root),
            "--store_name", name, *TINY, *flags]
    return sts_main(argv)


def check_results(run_dir: Path, result: dict) -> dict:
    """results.json has the common schema and its test metrics are those of the saved predictions."""
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved) == {"val", "test", "epoch", "step", "cost", "benchmark", "provenance", "args"}
    predictions = np.load(run_dir / "test_predictions.npz")
    recomputed = correlation_shot_metrics(predictions["preds"], predictions["labels"], predictions["train_labels"],
                                          5, 2, STSB_BINS, balanced=True)
    for shot in ("all", "many", "medium", "few"):
        assert set(saved["test"][shot]) == {"mse", "l1", "gmean", "pearson", "spearman", "count", "bmae", "bmse",
                                            "sera", "bins"}
        for key, value in recomputed[shot].items():
            got = saved["test"][shot][key]
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value, rel=1e-9), (shot, key)
    assert saved["test"]["all"]["count"] == 40 and math.isfinite(saved["test"]["all"]["mse"])
    assert result["test"] == saved["test"] or json.dumps(result["test"]) == json.dumps(saved["test"])
    return saved


METHODS = {
    "vanilla": [],
    "l1": ["--loss", "l1"],
    "focal_mse": ["--loss", "focal_mse"],
    "focal_l1": ["--loss", "focal_l1"],
    "huber": ["--loss", "huber", "--huber_beta", "0.3"],
    "inverse": ["--reweight", "inverse"],
    "sqrt_inv": ["--reweight", "sqrt_inv"],
    "inverse_lds": ["--reweight", "inverse", "--lds", "--lds_kernel", "gaussian", "--lds_ks", "5", "--lds_sigma", "2"],
    "fds": ["--fds", "--fds_kernel", "gaussian", "--fds_ks", "5", "--fds_sigma", "2", "--max_vals", "5"],
    "ranksim": ["--regularization_weight=3e-4", "--interpolation_lambda=2"],
    "conr": ["--conr"],
    "srl": ["--dfr", "--w1", "1e-4", "--w2", "1e-2", "--w3", "1e-4", "--temp", "0.1", "--n_points", "50",
            "--embedding_dim", "8", "--max_vals", "5"],
    "bmse_gai": ["--bmse", "--imp", "gai"],
    "bmse_bmc": ["--bmse", "--imp", "bmc"],
    "bmse_bni": ["--bmse", "--imp", "bni", "--reweight", "inverse", "--lds"],
    "no_glove": ["--glove", "0", "--d_word", "5"],
    "highway_trainable": ["--n_layers_highway", "1", "--train_words", "1"],
    "amp": ["--amp", "--conr", "--fds", "--max_vals", "5"],
    "all_together": ["--reweight", "inverse", "--lds", "--fds", "--conr", "--regularization_weight", "3e-4",
                     "--dfr", "--n_points", "50", "--embedding_dim", "8", "--max_vals", "5"],
}
COMPONENTS = {
    "l1": {"l1"}, "focal_mse": {"focal_mse"}, "focal_l1": {"focal_l1"}, "huber": {"huber"},
    "ranksim": {"mse", "ranksim"}, "conr": {"mse", "conr"}, "amp": {"mse", "conr"},
    "srl": {"mse", "srl_contrastive", "srl_enveloping", "srl_homogeneity"},
    "bmse_gai": {"bmse"}, "bmse_bmc": {"bmse"}, "bmse_bni": {"bmse"},
    "all_together": {"mse", "ranksim", "conr", "srl_contrastive", "srl_enveloping", "srl_homogeneity"},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_and_reports(method, data, tmp_path):
    result = train(data, tmp_path, method, "--print_freq", "1", *METHODS[method])
    run_dir = tmp_path / method
    saved = check_results(run_dir, result)
    log = (run_dir / "training.log").read_text()
    assert logged_components(log) == COMPONENTS.get(method, {"mse"})
    assert "NOT a published STS-B-DIR split" in log and "vocabulary: 26 words" in log
    assert saved["step"] % 5 == 0 and saved["args"]["d_word"] == (5 if method == "no_glove" else 6)
    checkpoint = torch.load(run_dir / "ckpt.pth.tar", weights_only=True)
    state = checkpoint["state_dict"]
    if method in ("fds", "all_together", "amp"):
        # FDS ran its statistics pass after epoch 0 (10 iterations per epoch; validations at 5…25).
        assert checkpoint["trainer"]["global_step"] == 25 and int(state["fds.epoch"]) == 1
        assert float(state["fds.num_samples_tracked"].sum()) == 2 * 160
    if method == "no_glove":
        assert state["embedding.weight"].shape == (28, 5)       # 26 words + padding + unknown


def test_frozen_glove_rows_stay_and_oov_rows_follow_the_seed(data, tmp_path):
    data_dir, glove = data
    train(data, tmp_path, "a", "--seed", "3")
    train(data, tmp_path, "b", "--seed", "4")
    first = torch.load(tmp_path / "a" / "ckpt.pth.tar", weights_only=True)["state_dict"]["embedding.weight"]
    second = torch.load(tmp_path / "b" / "ckpt.pth.tar", weights_only=True)["state_dict"]["embedding.weight"]
    vectors = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in glove.read_text().splitlines()}
    dataset, text = (folder_module("sts-b-dir", name) for name in ("dataset", "text"))
    vocabulary = text.build_vocabulary(dataset.load_splits(data_dir).values())
    for i, word in enumerate(vocabulary):
        if word in vectors:
            assert first[i].tolist() == pytest.approx(vectors[word], abs=1e-6) and torch.equal(first[i], second[i])
    oov = [i for i, w in enumerate(vocabulary) if i > 0 and w not in vectors and w.lower() not in vectors]
    assert oov and not torch.equal(first[oov], second[oov]) and not first[0].any()


def test_evaluate_both_forms_and_without_the_glove_file(data, tmp_path):
    result = train(data, tmp_path, "run")
    best = tmp_path / "run" / "ckpt.best.pth.tar"
    data_dir, glove = data
    moved = tmp_path / "elsewhere.txt"
    shutil.copy(glove, moved)
    base = ["--data_dir", str(data_dir), "--word_embs_file", str(tmp_path / "absent.txt"), *SHOTS]
    for form in (["--evaluate", "--resume", str(best)], ["--evaluate", "--eval_model", str(best)]):
        metrics = sts_main(base + form)
        assert json.dumps(metrics) == json.dumps(result["test"])
        saved = json.loads((tmp_path / "run" / "eval.json").read_text())
        assert json.dumps(saved["test"]) == json.dumps(result["test"])


def test_resume_from_an_epoch_boundary_is_exact(data, tmp_path):
    flags = ["--val_interval", "10", "--max_vals", "10", "--fds", "--conr"]
    full = train(data, tmp_path, "full", *flags, "--epoch", "3")
    train(data, tmp_path, "part", *flags, "--epoch", "2")
    resumed = sts_main(["--data_dir", str(data[0]), "--resume", str(tmp_path / "part" / "ckpt.pth.tar"),
                        "--epoch", "3"])
    assert json.dumps(resumed["test"]) == json.dumps(full["test"]) and resumed["step"] == full["step"]


def test_rrt_retrains_only_the_head_of_the_pretrained_encoder(data, tmp_path):
    train(data, tmp_path, "base")
    base = torch.load(tmp_path / "base" / "ckpt.best.pth.tar", weights_only=True)["state_dict"]
    train(data, tmp_path, "rrt", "--retrain_fc", "--pretrained", str(tmp_path / "base" / "ckpt.best.pth.tar"),
          "--reweight", "inverse")
    rrt = torch.load(tmp_path / "rrt" / "ckpt.pth.tar", weights_only=True)["state_dict"]
    for key, value in base.items():
        assert torch.equal(rrt[key], value) != key.startswith("linear."), key
    with pytest.raises(SystemExit, match="does not fit this model"):
        train(data, tmp_path, "rrt2", "--retrain_fc", "--pretrained", str(tmp_path / "base" / "ckpt.best.pth.tar"),
              "--reweight", "inverse", "--d_hid", "4")


def write_split(folder: Path, data_dir: Path):
    folder.mkdir()
    for name in ("train_new.tsv", "dev_new.tsv", "test_new.tsv"):
        shutil.copy(data_dir / name, folder / name)
    return folder


def test_bad_data_files_end_with_one_sentence_and_skipped_rows_are_counted(data, tmp_path):
    data_dir, glove = data
    bad = write_split(tmp_path / "bad", data_dir)
    lines = (bad / "train_new.tsv").read_text().splitlines(keepends=True)
    cut = lines[5].rsplit("\t", 1)[0] + "\n"                                   # line 6 loses its score column
    (bad / "train_new.tsv").write_text("".join(lines[:5] + [cut] + lines[6:]))
    argv = lambda folder, *more: ["--data_dir", str(folder), "--word_embs_file", str(glove), "--store_root",
                                  str(tmp_path), *TINY, *more]
    with pytest.raises(SystemExit, match=r"^error: data file .*train_new.tsv, line 6: the row has 9 tab-separated "
                                         r"columns, not 10"):
        sts_main(argv(bad, "--store_name", "x"))
    fields = lines[5].split("\t")
    (bad / "train_new.tsv").write_text("".join(lines[:5] + ["\t".join(fields[:-1] + ["n/a\n"])] + lines[6:]))
    with pytest.raises(SystemExit, match=r"line 6: the score 'n/a' is not a number"):
        sts_main(argv(bad, "--store_name", "y"))
    # An empty sentence and an empty score: skipped, counted in the log, the run goes on.
    empty = fields[:7] + ["", *fields[8:]]
    no_score = fields[:-1] + ["\n"]
    (bad / "train_new.tsv").write_text("".join(lines[:5] + ["\t".join(empty), "\t".join(no_score)] + lines[7:]))
    train_args = argv(bad, "--store_name", "skipped")
    sts_main(train_args)
    log = (tmp_path / "skipped" / "training.log").read_text()
    assert "train: 158 pairs from" in log and "2 rows skipped (empty sentence or score)" in log
    with pytest.raises(SystemExit, match=r"^error: word vector file .*absent.txt does not exist\. Get GloVe"):
        sts_main(["--data_dir", str(data_dir), "--word_embs_file", str(tmp_path / "absent.txt"), "--store_root",
                  str(tmp_path), "--store_name", "z", *TINY])
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(glove.read_text().replace("\n", " 0.5\n", 1))              # first row 7-d, the others 6-d
    with pytest.raises(SystemExit, match=r"mixed.txt, line 2: the row has 6 values where the first row has 7"):
        sts_main(["--data_dir", str(data_dir), "--word_embs_file", str(mixed), "--store_root", str(tmp_path),
                  "--store_name", "w", *TINY])


def test_report_reads_text_runs(data, tmp_path, capsys):
    train(data, tmp_path, "one")
    from common.tools import report
    report.main([str(tmp_path / "one"), "--plot", str(tmp_path / "plot.png")])
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "one" / "results.json").read_text())
    assert f"{saved['test']['all']['mse']:.3f}" in out and (tmp_path / "plot.png").is_file()
    # The plot groups scores by the run's own 0.1-wide bins (not by exact label, as for ages).
    from common.bins import STSB_BINS
    assert report.saved_bins(report.load_run(tmp_path / "one")["predictions"]) == STSB_BINS


@pytest.mark.skipif(not (REAL / "train_new.tsv").is_file(), reason=f"no STS-B-DIR split at {REAL}")
def test_real_split_smoke(tmp_path):
    """A few iterations on the real DIR split with a tiny GloVe file (a handful of common words)."""
    glove = tmp_path / "g.txt"
    rng = np.random.default_rng(0)
    glove.write_text("".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.standard_normal(4))}\n"
                             for w in ["a", "the", "man", "is", ".", ",", "woman", "playing"]))
    result = sts_main(["--data_dir", str(REAL), "--word_embs_file", str(glove), "--cache_dir", str(tmp_path / "c"),
                       "--store_root", str(tmp_path), "--store_name", "real", "--d_hid", "4", "--batch_size", "256",
                       "--val_interval", "3", "--max_vals", "1", "--lr", "1e-2", "--print_freq", "100",
                       "--reweight", "inverse", "--lds", "--fds"])
    counts = [result["test"][shot]["count"] for shot in ("all", "many", "medium", "few")]
    assert counts == [1000, 756, 170, 74]
    assert [result["val"][shot]["count"] for shot in ("many", "medium", "few")] == [758, 177, 65]
    log = (tmp_path / "real" / "training.log").read_text()
    assert "DIR's published STS-B-DIR split" in log and "SHA-256 verified" in log
    assert "train: 5249 pairs" in log and re.search(r"word vectors: \d+ of 17009 words", log)


@pytest.mark.skipif(not (REAL / "ranksim" / "train_new.tsv").is_file(), reason=f"no RankSim split at {REAL}/ranksim")
def test_real_ranksim_split_smoke(tmp_path, capsys):
    """A few iterations on RankSim/SRL's published split, as copied by hand (no split.json): the log names it, and
    the default --shot_rule auto groups the shots by the references' lists, as --shot_rule lists does."""
    glove = tmp_path / "g.txt"
    rng = np.random.default_rng(0)
    glove.write_text("".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.standard_normal(4))}\n"
                             for w in ["a", "the", "man", "is", ".", ",", "woman", "playing"]))
    data_dir = tmp_path / "data_ranksim"
    data_dir.mkdir()
    for name in ("train_new.tsv", "dev_new.tsv", "test_new.tsv"):
        shutil.copyfile(REAL / "ranksim" / name, data_dir / name)
    result = sts_main(["--data_dir", str(data_dir), "--word_embs_file", str(glove), "--cache_dir", str(tmp_path / "c"),
                       "--store_root", str(tmp_path), "--store_name", "real", "--d_hid", "4", "--batch_size", "256",
                       "--val_interval", "3", "--max_vals", "1", "--lr", "1e-2", "--print_freq", "100",
                       "--shot_rule", "lists"])
    assert [result["test"][shot]["count"] for shot in ("all", "many", "medium", "few")] == [1000, 775, 175, 50]
    assert [result["val"][shot]["count"] for shot in ("many", "medium", "few")] == [764, 177, 59]
    log = (tmp_path / "real" / "training.log").read_text()
    assert f"split {data_dir}: RankSim/SRL's published split of STS-B-DIR (BorealisAI/ranksim-imbalanced-regression " \
           "at b08052d, SHA-256 verified)" in log
    assert "shots: the references' hard-coded 0.1-bin lists" in log and "train: 5249 pairs" in log
    evaluated = sts_main(["--evaluate", "--resume", str(tmp_path / "real" / "ckpt.best.pth.tar"),
                          "--shot_rule", "auto"])
    assert [evaluated[shot]["count"] for shot in ("many", "medium", "few")] == [775, 175, 50]
    # One byte of the copy changed (a genre column, which no score or sentence depends on): the log names the file
    # and the default rule no longer takes the folder for RankSim's, so the shots are the training counts.
    test = bytearray((data_dir / "test_new.tsv").read_bytes())
    at = test.index(b"main-captions\t") + len("main-caption")
    test[at] = ord("z")
    (data_dir / "test_new.tsv").write_bytes(bytes(test))
    dataset = folder_module("sts-b-dir", "dataset")
    found = dataset.sha256_of(data_dir / "test_new.tsv")
    edited = sts_main(["--evaluate", "--resume", str(tmp_path / "real" / "ckpt.best.pth.tar"), "--shot_rule", "auto"])
    assert [edited[shot]["count"] for shot in ("many", "medium", "few")] == [775, 181, 44]
    assert f"test_new.tsv differs from RankSim/SRL's published file (SHA-256 {found}, expected 8fd7e514" in \
        capsys.readouterr().out


def test_a_ranksim_split_is_evaluated_with_the_reference_shot_lists(data, tmp_path, monkeypatch):
    """A folder whose files are RankSim/SRL's published split (by SHA-256): training and --evaluate both group the
    shots by the references' hard-coded lists, as RankSim's published numbers do; --shot_rule counts overrides.
    The synthetic files stand in for RankSim's: the published hashes are set to theirs for this test."""
    data_dir, glove = data
    ranksim = tmp_path / "ranksim"
    shutil.copytree(data_dir, ranksim, ignore=shutil.ignore_patterns("cache"))
    dataset = folder_module("sts-b-dir", "dataset")
    digests = {name: dataset.sha256_of(ranksim / name) for name in dataset.SPLIT_FILES.values()}
    from common.tools.datasplit import STSB_SPLITS
    monkeypatch.setitem(STSB_SPLITS["ranksim"], "sha256", digests)
    result = train((ranksim, glove), tmp_path, "lists")
    log = (tmp_path / "lists" / "training.log").read_text()
    assert "RankSim/SRL's published split" in log
    assert "shots: the references' hard-coded 0.1-bin lists" in log
    predictions = np.load(tmp_path / "lists" / "test_predictions.npz")
    lists = correlation_shot_metrics(predictions["preds"], predictions["labels"], predictions["train_labels"],
                                     bins=STSB_BINS, shot_bins=dataset.REFERENCE_SHOT_BINS, balanced=True)
    assert json.dumps(result["test"], sort_keys=True) == json.dumps(lists, sort_keys=True)
    evaluated = sts_main(["--evaluate", "--resume", str(tmp_path / "lists" / "ckpt.best.pth.tar")])
    assert json.dumps(evaluated, sort_keys=True) == json.dumps(lists, sort_keys=True)
    counted = train((ranksim, glove), tmp_path, "counts", "--shot_rule", "counts")
    assert "shots: by training pairs per 0.1 bin" in (tmp_path / "counts" / "training.log").read_text()
    shots = ("many", "medium", "few")
    assert [counted["test"][s]["count"] for s in shots] != [lists[s]["count"] for s in shots]


def test_bad_checkpoints_and_ignored_flags_are_said_on_sts_b_too(data, tmp_path):
    """The same classes of input as on the age benchmarks: --bmse says --loss is not used; a checkpoint with
    non-finite weights is named before evaluating; an age checkpoint is refused."""
    train(data, tmp_path, "bmse", "--bmse", "--imp", "bmc", "--loss", "l1")
    assert "--bmse replaces the regression loss: --loss l1 is not used" in \
        (tmp_path / "bmse" / "training.log").read_text()
    checkpoint = torch.load(tmp_path / "bmse" / "ckpt.best.pth.tar", weights_only=False)
    checkpoint["state_dict"]["linear.weight"].fill_(float("nan"))
    torch.save(checkpoint, tmp_path / "nan.pth.tar")
    with pytest.raises(SystemExit) as info:
        sts_main(["--evaluate", "--resume", str(tmp_path / "nan.pth.tar")])
    assert "holds non-finite weights (linear.weight)" in str(info.value.code)
    checkpoint["args"] = {"dataset": "agedb", "model": "resnet18"}
    del checkpoint["benchmark"]
    torch.save(checkpoint, tmp_path / "age.pth.tar")
    with pytest.raises(SystemExit) as info:
        sts_main(["--evaluate", "--resume", str(tmp_path / "age.pth.tar")])
    assert "was trained by agedb-dir/train.py, not sts-b-dir/train.py" in str(info.value.code)
