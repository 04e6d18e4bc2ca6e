"""RnC, UVOTE and VIR as wired into the models, objectives, optimiser and flags: heads, UVOTE's per-bin weights,
VIR's probabilistic FDS, the objective's components, the frozen probe, the uncertainty metrics.

Each is checked against a loop statement of its definition or against the loss functions it must reproduce."""
import argparse
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn as nn

from common import checkpointing, cli
from common.bins import AGE_BINS, LabelBins
from common.fds import FDS, ProbabilisticFDS
from common.lds import kernel_window, prepare_weights, smoothed_bin_counts
from common.losses import rnc_loss, uvote_head_weights, uvote_loss, uvote_weight_table, vir_loss
from common.losses.vir import VIR_ALPHA0
from common.metrics import ause, calibration_bins, uncertainty_metrics
from common.models.heads import UVOTEHead, VIRHead, regression_head, run_head
from common.models.resnet import ResNetRegressor
from common import methods
from common.method import LabelView
from common.objective import ObjectiveData, objective_from_flags
from common.optim import build_optimizer

torch.set_default_dtype(torch.float32)


# -- UVOTE's per-bin head weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, lds", [(2, False), (3, False), (4, True), (1, False)])
def test_uvote_weight_table_against_its_statement(heads, lds):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 400, 30).astype(float)
    counts[[3, 17]] = 0
    table = uvote_weight_table(counts, heads, lds=lds, lds_ks=5, lds_sigma=2, clip=(5, 1000))
    for i in range(heads):
        r = 0.0 if heads == 1 else i / (heads - 1)
        if r == 0:
            expected = np.ones(30)
        else:
            base = np.clip(counts, 5, 1000) if r >= 1 else counts
            effective = smoothed_bin_counts(base ** r, "none", lds, "gaussian", 5, 2)
            with np.errstate(divide="ignore"):
                raw = 1 / effective
            trained = counts > 0
            expected = raw * counts.sum() / (counts[trained] * raw[trained]).sum()
        assert np.allclose(table[:, i], expected, rtol=1e-12)
        trained = counts > 0
        assert math.isclose((counts[trained] * table[trained, i]).sum(), counts.sum(), rel_tol=1e-12)


def test_uvote_weight_table_heads_are_the_repo_reweightings():
    labels = np.random.default_rng(1).integers(0, 100, 3000).astype(float)
    table = uvote_weight_table(AGE_BINS.histogram(labels), 3)
    rows = AGE_BINS.index(labels)
    assert np.allclose(table[rows, 1], prepare_weights(labels, "sqrt_inv"), rtol=1e-6)
    assert np.allclose(table[rows, 2], prepare_weights(labels, "inverse"), rtol=1e-6)
    assert np.allclose(table[rows], uvote_head_weights(labels, None, 3), rtol=1e-6)


def test_uvote_weight_table_gives_empty_bins_infinite_weight_only_where_nothing_fills_them():
    counts = np.array([10.0, 0.0, 40.0, 5.0])
    table = uvote_weight_table(counts, 3, clip=None)
    assert np.isinf(table[1, 1]) and np.isinf(table[1, 2]) and table[1, 0] == 1
    clipped = uvote_weight_table(counts, 2, clip=(5, 1000))
    assert np.isfinite(clipped).all()
    with pytest.raises(ValueError, match="non-empty"):
        uvote_weight_table(np.zeros((2, 2)), 2)


# -- heads -----------------------------------------------------------------------------------------------------------
def test_uvote_head_votes_for_the_least_uncertain_head_per_sample_and_pixel():
    torch.manual_seed(0)
    head = UVOTEHead(6, num_heads=3, kernel_size=3)
    maps = torch.randn(2, 6, 4, 5)
    out = head(maps)
    mus, log_sigmas = out["mus"], out["log_sigmas"]
    assert out["pred"].shape == out["sigma"].shape == (2, 1, 4, 5) and mus.shape == (2, 3, 4, 5)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                best = int(log_sigmas[b, :, y, x].clamp(-5, 5).argmin())
                assert out["pred"][b, 0, y, x] == mus[b, best, y, x]
                assert torch.isclose(out["sigma"][b, 0, y, x],
                                     math.sqrt(2) * log_sigmas[b, best, y, x].clamp(-5, 5).exp())
    vector = UVOTEHead(6, num_heads=2, rule="avg")(torch.randn(5, 6))
    assert torch.allclose(vector["pred"][:, 0], vector["mus"].mean(1))


def test_vir_head_in_evaluation_is_the_nig_of_the_latent_mean():
    torch.manual_seed(0)
    head = VIRHead(5).eval()
    features = torch.randn(7, 5)
    out = head(features)
    raw = head.nig(features)
    softplus = lambda x: 10 * torch.log1p(torch.exp(x / 10))  # noqa: E731
    n = softplus(raw[:, 1:2]) + 2
    nu, alpha, beta = n, VIR_ALPHA0 + n / 2, softplus(raw[:, 2:3])
    assert torch.equal(out["pred"], raw[:, 0:1])
    assert torch.allclose(out["sigma"] ** 2, beta * (1 + nu) / (nu * (alpha - 1)), rtol=1e-5)
    assert torch.allclose(out["latent_var"], torch.nn.functional.softplus(-5 + 0 * features) + 1e-6)
    assert torch.equal(head(features)["pred"], out["pred"])         # no sampling in evaluation


def test_vir_head_in_training_samples_around_the_calibrated_latent():
    torch.manual_seed(0)
    head = VIRHead(3)
    features = torch.randn(4000, 3)
    torch.manual_seed(1)
    sampled = head(features)["vir"][0]
    torch.manual_seed(1)
    noise = torch.randn_like(features)
    latent = features + head.latent_variance(features).sqrt() * noise
    assert torch.allclose(sampled, head.nig(latent)[:, 0:1], atol=1e-6)


def test_point_head_keeps_the_reference_layer_and_run_head_detaches_for_the_probe():
    assert type(regression_head("point", 8)) is nn.Linear
    assert type(regression_head("point", 8, kernel_size=5)) is nn.Conv2d
    head = nn.Linear(4, 1)
    features = torch.randn(3, 4, requires_grad=True)
    out, _ = run_head(head, features, detach=True)
    out["pred"].sum().backward()
    assert features.grad is None and head.weight.grad is not None


def test_age_model_keeps_its_state_dict_keys_with_the_point_head():
    keys = set(ResNetRegressor("resnet18", width=4).state_dict())
    assert {"linear.weight", "linear.bias"} <= keys
    uvote = set(ResNetRegressor("resnet18", width=4, head="uvote", num_heads=3).state_dict())
    assert {"linear.mu.weight", "linear.log_sigma.weight"} <= uvote and keys - uvote == {"linear.weight",
                                                                                         "linear.bias"}


# -- VIR's probabilistic FDS --------------------------------------------------------------------------------------
def _smooth(stats, window):
    """Reflect-padded convolution along the buckets, written as a loop."""
    k, half = stats.shape[0], len(window) // 2
    out = np.zeros_like(stats)
    for b in range(k):
        for j, w in enumerate(window):
            source = b + j - half
            source = -source if source < 0 else 2 * (k - 1) - source if source >= k else source
            out[b] += w * stats[source]
    return out


def test_probabilistic_fds_statistics_and_calibration_against_loops():
    rng = np.random.default_rng(0)
    k, d, start = 12, 3, 2
    labels = rng.integers(start, start + k, 400).astype(np.float64)
    means = rng.normal(size=(400, d)) + labels[:, None] * 0.1
    variances = rng.uniform(0.1, 2.0, size=(400, d))
    fds = ProbabilisticFDS(d, start + k, start, start_update=0, start_smooth=1, ks=5, sigma=2, clip_min=0.1,
                           clip_max=10).double()
    tensor = lambda x: torch.from_numpy(x)  # noqa: E731
    fds.update_last_epoch_stats(0)
    fds.update_running_stats(tensor(means), tensor(labels), 0, latent_var=tensor(variances))
    fds.update_last_epoch_stats(1)
    m1 = np.stack([means[labels == start + b].mean(0) for b in range(k)])
    u1 = np.stack([means[labels == start + b].var(0, ddof=1) for b in range(k)])
    s1 = np.stack([variances[labels == start + b].mean(0) for b in range(k)])
    assert np.allclose(fds.running_mean_last_epoch.numpy(), m1)
    assert np.allclose(fds.running_var_last_epoch.numpy(), u1)
    assert np.allclose(fds.latent.running_mean_last_epoch.numpy(), s1)
    window = kernel_window("gaussian", 5, 2, normalise="sum", dtype="float64")
    m2, u2, s2 = _smooth(m1, window), _smooth(u1, window ** 2), _smooth(s1, window ** 2)
    assert np.allclose(fds.smoothed_mean_last_epoch.numpy(), m2, rtol=1e-6)
    assert np.allclose(fds.smoothed_var_last_epoch.numpy(), u2, rtol=1e-6)
    factor = np.clip((u2 + s2) / (u1 + s1), 0.1, 10)
    z, s, y = means[:5], variances[:5], labels[:5]
    rows = (y - start).astype(int)
    calibrated, spread = fds.smooth(tensor(z), tensor(y), 1, latent_var=tensor(s))
    assert np.allclose(calibrated.numpy(), (z - m1[rows]) * np.sqrt(factor[rows]) + m2[rows], rtol=1e-6)
    assert np.allclose(spread.numpy(), s * factor[rows], rtol=1e-6)
    same, unchanged = fds.smooth(tensor(z), tensor(y), 0, latent_var=tensor(s))     # before start_smooth
    assert torch.equal(same, tensor(z)) and torch.equal(unchanged, tensor(s))


def test_probabilistic_fds_streaming_statistics_equal_one_update_and_survive_a_state_dict():
    torch.manual_seed(0)
    maps, depth = torch.randn(4, 3, 5, 6, dtype=torch.float64), torch.rand(4, 1, 5, 6, dtype=torch.float64) * 2
    variance = torch.rand(4, 3, 5, 6, dtype=torch.float64)
    make = lambda: ProbabilisticFDS(3, 20, 2, bins=LabelBins(0, 0.1, 20), edge_rule="clamp").double()  # noqa
    whole, streamed = make(), make()
    whole.update_last_epoch_stats(0)
    whole.update_running_stats(maps, depth, 0, latent_var=variance)
    moments = streamed.statistics()
    for i in range(4):
        moments.add(maps[i:i + 1], depth[i:i + 1], variance[i:i + 1])
    moments.commit(0)
    for name, value in whole.state_dict().items():
        assert torch.allclose(value.double(), streamed.state_dict()[name].double()), name
    whole.update_last_epoch_stats(1)
    copy = make()
    copy.load_state_dict(whole.state_dict())
    a, b = whole.smooth(maps, depth, 1, latent_var=variance), copy.smooth(maps, depth, 1, latent_var=variance)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="latent_var"):
        whole.update_running_stats(maps, depth, 1)


# -- the objective's components -------------------------------------------------------------------------------------
class _Fixed(nn.Module):
    """A model whose outputs are given tensors (its forward ignores the input)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, targets=None, smooth=True):
        return self.out


def test_uvote_component_is_uvote_loss_with_the_head_weights_of_each_label():
    torch.manual_seed(0)
    train = np.random.default_rng(0).integers(0, 60, 500).astype(float)
    targets = torch.tensor(train[:16], dtype=torch.float32)[:, None]
    mus, log_sigmas = torch.randn(16, 3) * 10 + 30, torch.randn(16, 3)
    data = ObjectiveData(label_bins=AGE_BINS, label_counts=AGE_BINS.histogram(train))
    objective = objective_from_flags(data, uvote=True, num_branch=3, dynamic_loss=True, epoch=10)
    batch = {"input": torch.zeros(16, 1), "target": targets, "weight": torch.ones(16, 1)}
    components = objective(_Fixed({"pred": mus[:, :1], "encoding": torch.randn(16, 4), "mus": mus,
                                   "log_sigmas": log_sigmas}), batch, 4)
    weights = torch.from_numpy(uvote_head_weights(train, train[:16], 3))
    expected = uvote_loss(mus, log_sigmas, targets, weights, epoch=4, epochs=10, dynamic=True)
    assert set(components) == {"uvote"} and torch.allclose(components["uvote"], expected)


def test_vir_component_scales_the_pseudo_count_by_the_weight():
    torch.manual_seed(0)
    mean, evidence, omega = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    targets, weights = torch.randn(8, 1), torch.rand(8, 1) + 0.5
    view = LabelView()
    view.label_scale = 2.0
    objective = objective_from_flags(ObjectiveData(view=view), vir=True, vir_reg_weight=0.01)
    components = objective(_Fixed({"pred": mean, "encoding": torch.randn(8, 4), "vir": (mean, evidence, omega)}),
                           {"input": torch.zeros(8, 1), "target": targets, "weight": weights}, 0)
    softplus = lambda x: 10 * torch.log1p(torch.exp(x / 10))  # noqa: E731
    n = (softplus(evidence) + 2) * weights
    expected = vir_loss(mean, n, VIR_ALPHA0 + n / 2, softplus(omega), targets / 2, reg_weight=0.01)
    assert set(components) == {"vir"} and torch.allclose(components["vir"], expected)


def test_rnc_component_reads_the_views_of_every_sample():
    torch.manual_seed(0)
    targets = torch.tensor([[20.0], [35.0], [50.0]])
    main_encoding, view_encoding = torch.randn(3, 4), torch.randn(6, 4)

    class TwoPasses(nn.Module):
        def forward(self, x, targets=None, smooth=True):
            encoding = view_encoding if x.shape[0] == 6 else main_encoding
            return {"pred": encoding[:, :1], "encoding": encoding}

    views = (torch.zeros(3, 1), torch.zeros(3, 1))
    objective = objective_from_flags(loss="l1", rnc=True, rnc_weight=0.5)
    components = objective(TwoPasses(), {"input": torch.zeros(3, 1), "views": views, "target": targets,
                                         "weight": torch.ones(3, 1)}, 0)
    assert torch.allclose(components["rnc"], 0.5 * rnc_loss(view_encoding, targets.repeat(2, 1)))
    alone = objective(TwoPasses(), {"input": torch.zeros(3, 1), "target": targets, "weight": torch.ones(3, 1)}, 0)
    assert torch.allclose(alone["rnc"], 0.5 * rnc_loss(main_encoding, targets))


# -- optimiser, frozen probe, flags -------------------------------------------------------------------------------
def test_log_sigma_heads_train_at_a_tenth_of_the_learning_rate_on_the_same_schedule():
    model = ResNetRegressor("resnet18", width=4, head="uvote")
    args = argparse.Namespace(uvote=True, uvote_var_lr=0.1, lr=1e-3)
    optimizer, scheduler = build_optimizer(model, lr=1e-3, groups=methods.param_groups(args, model, None),
                                           lr_factor=lambda e: 0.5 ** e)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["log_sigma"]["lr"] == pytest.approx(1e-4) and len(groups["log_sigma"]["params"]) == 2
    named = dict(model.named_parameters())
    assert {id(p) for p in groups["log_sigma"]["params"]} == {id(named["linear.log_sigma.weight"]),
                                                             id(named["linear.log_sigma.bias"])}
    optimizer.step()
    scheduler.step()
    assert groups["log_sigma"]["lr"] == pytest.approx(5e-5) and groups["model"]["lr"] == pytest.approx(5e-4)


def test_the_frozen_trunk_of_the_linear_stage_computes_its_evaluation_features():
    torch.manual_seed(0)
    model = ResNetRegressor("resnet18", width=4, stem="cifar")
    x = torch.randn(8, 3, 16, 16)
    model.train()
    model(x)                                            # some running statistics first
    checkpointing.train_only(model, "linear.", frozen_in_eval=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    evaluation = model(x)["encoding"]
    model.train()
    training = model(x)["encoding"]
    assert torch.equal(training, evaluation)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("flags, sentence", [
    (["--uvote", "--vir"], "pass only one of them"),
    (["--uvote", "--bmse"], "drop --bmse"),
    (["--vir", "--bmse"], "drop --bmse"),
    (["--uvote", "--reweight", "sqrt_inv"], "drop --reweight"),
    (["--dynamic_loss"], "add --uvote"),
    (["--uvote", "--num_branch", "0"], "--num_branch must be ≥ 1"),
    (["--rnc_stage", "linear"], "add --pretrained CKPT"),
    (["--rnc_stage", "encoder", "--vir"], "drop --uvote, --vir and --bmse"),
    (["--rnc", "--rnc_temp", "0"], "--rnc_temp must be > 0"),
    (["--vir", "--fds", "--fds_alias_last_epoch"], "drop --fds_alias_last_epoch"),
    (["--rnc_stage", "encoder", "--rnc_weight", "0"], "--rnc_weight must be > 0"),
])
def test_combinations_that_cannot_work_are_one_sentence(flags, sentence, capsys):
    parser = cli.build_age_parser("t")
    with pytest.raises(SystemExit):
        cli.parse(parser, flags)
    assert sentence in capsys.readouterr().err


def test_accepted_combinations_set_what_they_imply():
    parser = cli.build_age_parser("t")
    args = cli.parse(parser, ["--rnc_stage", "encoder", "--conr"])
    assert args.rnc and not args.retrain_fc
    args = cli.parse(cli.build_age_parser("t"), ["--rnc_stage", "linear", "--pretrained", "x.pth.tar"])
    assert not args.rnc and args.retrain_fc
    args = cli.parse(cli.build_age_parser("t"), ["--uvote", "--lds", "--fds", "--conr"])   # --lds, no --reweight
    assert args.uvote and args.lds
    assert "uvote_2" in "_".join(cli.method_tags(args))


# -- uncertainty metrics ----------------------------------------------------------------------------------------------
def test_calibration_bins_and_uncertainty_metrics_against_their_statements():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 3.0, 1000)
    labels = rng.normal(size=1000) * 10
    preds = labels + rng.normal(size=1000) * sigma
    rmv, rmse, count = calibration_bins(preds, labels, sigma)
    order = np.argsort(sigma, kind="stable")
    for g, part in enumerate(np.array_split(order, 10)):
        assert math.isclose(rmv[g], math.sqrt(np.mean(sigma[part] ** 2)))
        assert math.isclose(rmse[g], math.sqrt(np.mean((preds[part] - labels[part]) ** 2)))
        assert count[g] == len(part)
    metrics = uncertainty_metrics(preds, labels, sigma)
    assert math.isclose(metrics["nll"], -scipy.stats.norm.logpdf(labels, preds, sigma).mean(), rel_tol=1e-12)
    assert math.isclose(metrics["ence"], np.mean(np.abs(rmv - rmse) / rmv))
    assert metrics["ence"] < 0.15                              # the noise was drawn with these σ


def test_ause_is_zero_for_a_perfect_ranking_and_positive_for_a_reversed_one():
    errors = np.arange(1, 101, dtype=float)
    preds, labels = errors, np.zeros(100)
    assert ause(preds, labels, errors) == 0.0
    reversed_ = ause(preds, labels, -errors)
    # By hand: removing a fraction f of the smallest errors leaves the mean of the largest (1 − f), the oracle the
    # mean of the smallest (1 − f); both over the full mean, trapezoids over f = 0, 0.01, …, 0.99.
    fractions = np.arange(100) / 100
    worst = np.array([errors[int(f * 100):].mean() for f in fractions]) / errors.mean()
    best = np.array([errors[:100 - int(f * 100)].mean() for f in fractions]) / errors.mean()
    gap = worst - best
    assert math.isclose(reversed_, float(np.sum((gap[1:] + gap[:-1]) / 2) / 100))
    assert reversed_ > 0.5


# -- the published protocols' command lines -------------------------------------------------------------------------
def test_the_reproduce_commands_of_rnc_uvote_and_vir_parse(capsys):
    """Every command of docs/reproduce.md's RnC/UVOTE/VIR section parses with its benchmark's flags and sets the
    method it names."""
    import re
    import shlex
    from pathlib import Path

    from folders import folder_module

    reproduce = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
    section = reproduce.read_text().split("## RnC (Zha et al.", 1)[1]
    parsers = {"AgeDB-DIR": lambda: cli.build_age_parser("t"),
               "IMDB-WIKI-DIR": lambda: cli.build_age_parser("t", num_branch=3),
               "STS-B-DIR": lambda: folder_module("sts-b-dir", "train").build_parser()}
    rows = re.findall(r"^\| (AgeDB-DIR|IMDB-WIKI-DIR|STS-B-DIR) \| ([^|]+) \| `python train.py ([^`]*)`", section,
                      re.MULTILINE)
    assert len(rows) == 7
    for benchmark, run, flags in rows:
        argv = shlex.split(flags.replace("<stage 1>", "stage1"))
        args = cli.parse(parsers[benchmark](), argv)
        method = re.match(r"\w+", run).group().lower()
        if method == "rnc":             # the paper's two stages (the second trains a head: RnC itself is off)
            assert args.rnc_stage == ("encoder" if "stage 1" in run else "linear") and args.rnc == ("stage 1" in run)
        else:
            assert getattr(args, method) is True, (benchmark, run)
        if "--num_branch" in argv:
            assert args.num_branch == int(argv[argv.index("--num_branch") + 1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("head", ["uvote", "vir"])
def test_heads_and_their_components_on_cuda_equal_cpu(head):
    """The same weights and batch give the same loss and predictions on CUDA as on the CPU (no sampling: the VIR
    head in evaluation mode; UVOTE's table and bins follow the batch's device)."""
    torch.manual_seed(0)
    train = np.random.default_rng(0).integers(0, 60, 500).astype(float)
    model = ResNetRegressor("resnet18", width=4, stem="cifar", head=head, num_heads=2).eval()
    settings = {"uvote": dict(uvote=True, num_branch=2), "vir": dict(vir=True, vir_reg_weight=0.01)}[head]
    data = ObjectiveData(label_bins=AGE_BINS, label_counts=AGE_BINS.histogram(train))
    batch = {"input": torch.randn(8, 3, 16, 16), "target": torch.tensor(train[:8], dtype=torch.float32)[:, None],
             "weight": torch.rand(8, 1) + 0.5}
    results = []
    for device in ("cpu", "cuda"):
        objective = objective_from_flags(data, rnc=True, rnc_weight=0.5, **settings).to(device)
        moved = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            components = objective(model.to(device), moved, 0)
            out = model(moved["input"])
        results.append((components, out["pred"].cpu(), out["sigma"].cpu()))
    (cpu, cpu_pred, cpu_sigma), (gpu, gpu_pred, gpu_sigma) = results
    for name in cpu:
        assert torch.allclose(cpu[name], gpu[name].cpu(), rtol=1e-4, atol=1e-5), name
    assert torch.allclose(cpu_pred, gpu_pred, rtol=1e-4, atol=1e-5)
    assert torch.allclose(cpu_sigma, gpu_sigma, rtol=1e-4, atol=1e-5)
