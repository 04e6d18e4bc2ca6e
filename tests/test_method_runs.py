"""The methods beyond the references (RnC, UVOTE, VIR, Dist Loss, Group-DIR, Ordinal Entropy, ACCon, BSAM) end to end
on every benchmark's synthetic data: a tiny run, its test predictions (with the predicted σ of UVOTE and VIR), and
``--evaluate --resume`` giving the run's own test metrics; exact resume with VIR's sampled latent and ACCon's
augmented views and Dist Loss's sampled pixels and BSAM's second pass; RnC's and Dist Loss's two stages."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.metrics import uncertainty_metrics
from common.synthetic import write_synthetic
from common.synthetic.depth import write_synthetic_nyud2
from folders import folder_main

pytestmark = pytest.mark.slow

METHODS = {
    "rnc": ["--rnc", "--rnc_weight", "0.5"],
    "uvote": ["--uvote", "--dynamic_loss", "--lds", "--uvote_rule", "avgvar"],   # evaluation keeps the rule
    "vir": ["--vir", "--fds", "--reweight", "sqrt_inv", "--lds"],
    "dist_loss": ["--dist_loss", "--reweight", "inverse", "--regularization_strength", "0.5"],
    "ordinal_entropy": ["--ordinal_entropy", "--oe_weight", "0.5", "--reweight", "sqrt_inv", "--lds"],
    # four groups, the logit-adjusted CE, LDS weights on the regression term and FDS before the 2G head
    "group_dir": ["--group_dir", "--groups", "4", "--ce", "--reweight", "sqrt_inv", "--lds", "--fds"],
    "accon": ["--accon"],             # its own head on the ages and STS-B; NYUD2's per-image features
    "bsam": ["--bsam", "--rho", "0.1"],   # a step rule with its own weights (raw on the ages, rescaled elsewhere)
}
POINT_HEADS = ("rnc", "dist_loss", "ordinal_entropy", "group_dir", "accon", "bsam")     # no predicted σ
AGE = ["--model", "resnet18", "--width", "4", "--img_size", "16", "--batch_size", "64", "--workers", "0",
       "--print_freq", "100", "--lr", "1e-2", "--epoch", "2", "--many_shot_thr", "4", "--low_shot_thr", "2"]
DEPTH = ["--scale", "36", "--crop", "44", "32", "--encoder", "resnet18", "--pretrained_encoder", "none",
         "--batch_size", "8", "--workers", "0", "--print_freq", "100", "--epochs", "2", "--lr", "1e-3"]
TEXT = ["--d_hid", "8", "--batch_size", "16", "--lr", "3e-3", "--val_interval", "5", "--max_vals", "2",
        "--print_freq", "100", "--workers", "0", "--many_shot_thr", "5", "--low_shot_thr", "2"]
same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # noqa: E731 (NaN == NaN)


def _text_data(folder: Path):
    """Sentence pairs in STS-B-DIR's TSV format and a 6-d word-vector file (tests/sts-b-dir/test_stsb_training.py's)."""
    from test_stsb_training import HEADER, WORDS, synthetic_split
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train_new.tsv", 160), ("dev_new.tsv", 40), ("test_new.tsv", 40)):
        (folder / name).write_text(HEADER + "".join(synthetic_split(rng, n)), encoding="utf-8")
    vectors = np.random.default_rng(1).standard_normal((len(WORDS) + 2, 6))
    glove = folder / "glove.6d.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{v:.4f}' for v in vec)}\n" for w, vec in zip(WORDS + [".", "'s"],
                                                                                            vectors)))
    return ["--word_embs_file", str(glove)]


BENCHMARKS = {
    "agedb-dir": (lambda d: write_synthetic("agedb", d, n=240, img_size=16, seed=3) and [], AGE),
    "imdb-wiki-dir": (lambda d: write_synthetic("imdb_wiki", d, n=240, img_size=16, seed=3) and [], AGE),
    "nyud2-dir": (lambda d: write_synthetic_nyud2(d, n=16, n_test=4, size=(48, 36), crop=(44, 32), seed=0) and [],
                  DEPTH),
    "sts-b-dir": (_text_data, TEXT),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Each benchmark's synthetic data folder, written once: ``{folder: (data_dir, extra flags)}``."""
    root = tmp_path_factory.mktemp("methods")
    out = {}
    for folder, (write, _) in BENCHMARKS.items():
        data_dir = root / folder
        extra = write(data_dir) or []
        out[folder] = (data_dir, extra)
    return out


def train(folder, data, store_root, name, *flags):
    data_dir, extra = data[folder]
    argv = ["--data_dir", str(data_dir), "--store_root", str(store_root), "--store_name", name,
            *BENCHMARKS[folder][1], *extra, *flags]
    return folder_main(folder)(argv)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("folder", list(BENCHMARKS))
def test_each_method_trains_and_evaluates_to_its_own_test(folder, method, data, tmp_path):
    result = train(folder, data, tmp_path, "run", *METHODS[method])
    run = tmp_path / "run"
    predictions = np.load(run / "test_predictions.npz")
    if method in POINT_HEADS:
        assert "sigma" not in predictions.files and "uncertainty" not in result["test"]
        log = (run / "training.log").read_text()
        if method == "bsam":                 # no term: its weights are said, and the second pass changed the step
            assert "BSAM's sample weights (--bsam_weights" in log
            base = train(folder, data, tmp_path, "base", "--bsam", "--rho", "0")      # the base optimiser's steps
            assert not same(base["test"], result["test"])
        else:
            term = {"dist_loss": "dist", "ordinal_entropy": "oe", "group_dir": "group_reg"}.get(method, method)
            assert f"  {term} " in log                                       # its term was trained
    else:
        sigma = predictions["sigma"]
        assert sigma.shape == predictions["preds"].shape and (sigma > 0).all() and np.isfinite(sigma).all()
        recomputed = uncertainty_metrics(predictions["preds"], predictions["labels"], sigma)
        for key, value in recomputed.items():
            assert math.isclose(result["test"]["uncertainty"][key], value, rel_tol=1e-5, abs_tol=1e-7), key
    assert json.loads((run / "results.json").read_text())["args"][method] is True
    metrics = folder_main(folder)(["--evaluate", "--resume", str(run / "ckpt.best.pth.tar"),
                                   "--data_dir", str(data[folder][0]), "--workers", "0"])
    assert same(metrics, result["test"])
    assert same(json.loads((run / "eval.json").read_text())["test"], result["test"])


@pytest.mark.parametrize("flags", [METHODS["vir"] + ["--rnc"], METHODS["uvote"], METHODS["accon"],
                                   METHODS["bsam"] + ["--conr"]])
def test_resume_is_exact_with_sampled_latents_and_voting_heads(flags, data, tmp_path):
    full = train("agedb-dir", data, tmp_path, "full", *flags)
    train("agedb-dir", data, tmp_path, "part", *flags, "--epoch", "1")
    resumed = folder_main("agedb-dir")(["--resume", str(tmp_path / "part" / "ckpt.pth.tar"), "--epoch", "2",
                                        "--data_dir", str(data["agedb-dir"][0]), "--workers", "0"])
    assert same(resumed["test"], full["test"])


def test_resume_is_exact_with_dist_loss_sampled_pixels(data, tmp_path):
    flags = METHODS["dist_loss"] + ["--dist_pixels", "200"]
    full = train("nyud2-dir", data, tmp_path, "full", *flags)
    train("nyud2-dir", data, tmp_path, "part", *flags, "--epochs", "1")
    resumed = folder_main("nyud2-dir")(["--resume", str(tmp_path / "part" / "ckpt.pth.tar"), "--epochs", "2",
                                        "--data_dir", str(data["nyud2-dir"][0]), "--workers", "0"])
    assert same(resumed["test"], full["test"])
    other = train("nyud2-dir", data, tmp_path, "other", *METHODS["dist_loss"], "--dist_pixels", "100")
    assert not same(other["test"], full["test"])                    # the sampled term acts


def test_dist_loss_two_stages_base_then_rrt_with_the_term(data, tmp_path):
    """The reference's protocol: a base model (λ = 0: the plain loss, no term), then RRT with Dist Loss, which
    trains the re-initialised head only."""
    train("agedb-dir", data, tmp_path, "base", "--dist_loss", "--distribution_loss_term_weight", "0", "--reweight",
          "inverse", "--epoch", "1")
    base = torch.load(tmp_path / "base" / "ckpt.pth.tar", weights_only=True)
    train("agedb-dir", data, tmp_path, "rrt", *METHODS["dist_loss"], "--retrain_fc", "--pretrained",
          str(tmp_path / "base" / "ckpt.pth.tar"), "--epoch", "1", "--select_on", "bmae")
    rrt = torch.load(tmp_path / "rrt" / "ckpt.pth.tar", weights_only=True)
    assert [len(group["params"]) for group in rrt["optimizer"]["param_groups"]] == [2]
    assert " dist " in (tmp_path / "rrt" / "training.log").read_text()            # the term is logged: it acts
    assert " dist " not in (tmp_path / "base" / "training.log").read_text()       # λ = 0 builds no term
    for key, value in rrt["state_dict"].items():     # every trunk parameter the base's (BN statistics move, as RRT's)
        if not key.startswith("linear.") and not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, base["state_dict"][key]), key


def test_rnc_two_stages_train_the_encoder_then_only_the_head(data, tmp_path, capsys):
    first = train("agedb-dir", data, tmp_path, "encoder", "--rnc_stage", "encoder")
    encoder = torch.load(tmp_path / "encoder" / "ckpt.pth.tar", weights_only=True)
    assert set(first["test"]) >= {"all", "few"}                        # the probe's test, on detached features
    train("agedb-dir", data, tmp_path, "linear", "--rnc_stage", "linear", "--pretrained",
          str(tmp_path / "encoder" / "ckpt.pth.tar"))
    linear = torch.load(tmp_path / "linear" / "ckpt.pth.tar", weights_only=True)
    # Only the head is optimised (two tensors), on the L1 loss alone, and the trunk — batch-norm statistics
    # included — is the encoder stage's, unchanged by a training pass in frozen evaluation mode.
    assert [len(group["params"]) for group in linear["optimizer"]["param_groups"]] == [2]
    assert linear["args"]["rnc"] is False
    for key, value in linear["state_dict"].items():
        if not key.startswith("linear."):
            assert torch.equal(value, encoder["state_dict"][key]), key
    with pytest.raises(SystemExit):
        train("agedb-dir", data, tmp_path, "both", "--rnc_stage", "linear", "--rnc", "--pretrained",
              str(tmp_path / "encoder" / "ckpt.pth.tar"))
    assert "which RnC cannot change: drop --rnc." in capsys.readouterr().err


# The earlier choices' numbers: these runs on the tree before the authors' defaults (main at c123684, CPU,
# float32), test metrics of the best checkpoint. The flags giving the earlier choices back reproduce them.
EARLIER = {
    "uvote": (["--uvote", "--dynamic_loss", "--lds", "--uvote_rule", "avgvar", "--uvote_init", "pytorch",
               "--uvote_vote", "clamped"],
              {"l1": 48.78036081936696, "nll": 774.7607121725781, "mean_sigma": 1.5113030879393867}),
    "vir": (["--vir", "--fds", "--reweight", "sqrt_inv", "--lds", "--lr", "3e-3", "--epoch", "4",
             "--vir_smoothing", "mixture", "--vir_sigma", "predictive"],
            {"l1": 48.27327591569527, "nll": 584.5853137697615, "mean_sigma": 1.6248099104217861}),
}


@pytest.mark.parametrize("method", list(EARLIER))
def test_flags_back_to_the_earlier_choices_reproduce_the_earlier_numbers(method, data, tmp_path):
    flags, want = EARLIER[method]
    test = train("agedb-dir", data, tmp_path, "earlier", *flags)["test"]
    got = {"l1": test["all"]["l1"], "nll": test["uncertainty"]["nll"], "mean_sigma": test["uncertainty"]["mean_sigma"]}
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-6), (key, got[key], value)
    default = train("agedb-dir", data, tmp_path, "default", *flags[:flags.index("--uvote_init" if method == "uvote"
                                                                                 else "--vir_smoothing")])["test"]
    assert not math.isclose(default["uncertainty"]["nll"], want["nll"], rel_tol=1e-3)     # the defaults differ


@pytest.mark.parametrize("folder", list(BENCHMARKS))
def test_head_start_puts_the_first_predictions_at_the_training_label_mean(folder, data, tmp_path):
    """With a learning rate too small to move it, the started point head predicts about the training labels'
    mean in the benchmark's units (STS-B's heads see score / 5, NYUD2's metres per pixel)."""
    tiny = ["--lr", "1e-9"] + (["--epoch", "1"] if folder in ("agedb-dir", "imdb-wiki-dir") else
                               ["--epochs", "1"] if folder == "nyud2-dir" else ["--max_vals", "1"])
    train(folder, data, tmp_path, "start", "--head_start", "labels", *tiny)
    saved = np.load(tmp_path / "start" / "test_predictions.npz")
    if folder == "nyud2-dir":
        counts = saved["train_pixel_counts"].astype(float)
        centres = np.arange(100) * 0.1 + 0.05
        mean = (counts * centres).sum() / counts.sum()
        std = np.sqrt((counts * (centres - mean) ** 2).sum() / counts.sum())
    else:
        mean, std = saved["train_labels"].mean(), saved["train_labels"].std()
    assert abs(saved["preds"].mean() - mean) < 0.1 * std, (saved["preds"].mean(), mean)
    head = "R.conv2" if folder == "nyud2-dir" else "linear"
    assert f"head start: {head} at the training labels' mean" in (tmp_path / "start" / "training.log").read_text()
