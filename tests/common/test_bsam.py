"""BSAM (common/bsam.py): ε against a float64 loop of methods-2025.md §2.1, its invariants (ρ = 0 is the base step
bit for bit, ‖ε‖₂, the restore by subtraction, a linear L1 model without a sign change has g̃ = g), the loop's step
with the rule against a hand-written SAM step, the gradient scaler (ε does not depend on its scale; a non-finite
first gradient skips the step), two processes equal to one, the weights and the flags."""
import copy
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from common import bsam, cli, methods
from common.bsam import BSAMStep, gradient_norm, perturb_, perturbation, restore_
from common.meters import DeviceMeters
from common.trainer import Task, Trainer
from folders import folder_module


# -- the maths ------------------------------------------------------------------------------------------------
def spec_eps(grads, rho):
    """ε of §2.1 by loops in float64: ‖g‖ = ‖(‖g_p‖₂)_p‖₂, ε_p = ρ·g_p/(‖g‖ + 1e-16)."""
    per_tensor = [math.sqrt(sum(v * v for v in g.double().reshape(-1).tolist())) for g in grads]
    norm = math.sqrt(sum(n * n for n in per_tensor))
    return [torch.tensor([rho * v / (norm + 1e-16) for v in g.double().reshape(-1).tolist()],
                         dtype=torch.float64).reshape(g.shape) for g in grads], norm


def some_grads(scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 3, 2, 2), (1,)]        # a weight, a bias, a conv kernel, a BatchNorm scale
    return [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype) for s in shapes]


@pytest.mark.parametrize("rho, scale", [(0.05, 1.0), (0.2, 3.0), (0.7, 1e-3), (0.2, 1e-17)])
def test_perturbation_is_the_formula(rho, scale):
    grads = some_grads(scale)
    eps, finite = perturbation(grads, rho)
    want, norm = spec_eps(grads, rho)
    assert bool(finite)
    for mine, theirs in zip(eps, want):
        assert mine.shape == theirs.shape and mine.dtype == torch.float64
        torch.testing.assert_close(mine, theirs, rtol=1e-13, atol=0)
    # invariant 2: ‖ε‖₂ = ρ‖g‖/(‖g‖ + 1e-16) (below ρ for a gradient near the 1e-16 guard)
    total = math.sqrt(sum(float((e ** 2).sum()) for e in eps))
    assert total == pytest.approx(rho * norm / (norm + 1e-16), rel=1e-13)
    assert gradient_norm(grads).item() == pytest.approx(norm, rel=1e-14)


def test_perturbation_of_mixed_dtypes_keeps_each_gradients_dtype():
    grads = [g.float() for g in some_grads()] + [torch.randn(3, dtype=torch.float64)]
    eps, _ = perturbation(grads, 0.1)
    assert [e.dtype for e in eps] == [torch.float32] * 4 + [torch.float64]
    want, _ = spec_eps(grads, 0.1)
    for mine, theirs in zip(eps, want):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_gradient_gives_eps_zero(bad):
    grads = some_grads(dtype=torch.float32)
    grads[1][2] = bad
    eps, finite = perturbation(grads, 0.2)
    assert not bool(finite)
    assert all(torch.equal(e, torch.zeros_like(e)) for e in eps)


def test_a_norm_that_overflows_gives_eps_zero():
    """Finite entries whose squares overflow float32: the norm is infinite, ε = 0 rather than NaN."""
    eps, finite = perturbation([torch.full((4,), 3e30)], 0.2)
    assert not bool(finite) and torch.equal(eps[0], torch.zeros(4))


@pytest.mark.parametrize("size", [1.0, 1e-17])       # 1e-17: a gradient whose norm is near the 1e-16 guard
@pytest.mark.parametrize("k", [0, 7, 16, 24])
def test_eps_does_not_depend_on_the_scalers_scale(k, size):
    """The scaler multiplies the gradients by s = 2^k; ε from ``s·g`` with ``scale=s`` is ε of g, bit for bit."""
    grads = [g * size for g in some_grads(dtype=torch.float32, seed=3)]
    plain, _ = perturbation(grads, 0.2)
    s = torch.tensor(2.0 ** k)
    scaled, finite = perturbation([g * s for g in grads], 0.2, scale=s)
    assert bool(finite)
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))
    if k and size < 1:  # without the scale, the guard would not scale with the gradient: ε would differ
        assert not torch.equal(plain[0], perturbation([g * s for g in grads], 0.2)[0][0])


def test_perturb_and_restore_work_in_place_and_restore_by_subtraction():
    g = torch.Generator().manual_seed(1)
    # small parameters and a larger ε: θ + ε rounds at ε's scale, so θ + ε − ε is θ only to ε's last bit
    theta = [torch.randn(200, generator=g) * 1e-3, torch.randn(3, 3, generator=g) * 1e-3]
    eps = [torch.randn(200, generator=g), torch.randn(3, 3, generator=g)]
    before = [t.clone() for t in theta]
    pointers = [t.data_ptr() for t in theta]
    perturb_(theta, eps)
    assert all(torch.equal(t, b + e) for t, b, e in zip(theta, before, eps))
    restore_(theta, eps)
    assert [t.data_ptr() for t in theta] == pointers                        # the same tensors, moved in place
    assert all(torch.equal(t, (b + e) - e) for t, b, e in zip(theta, before, eps))   # a subtraction …
    assert any(not torch.equal(t, b) for t, b in zip(theta, before))         # … so some come back an ulp off
    for t, b, e in zip(theta, before, eps):
        assert ((t - b).abs() <= e.abs() * 2.0 ** -23).all()                  # within an ulp of ε


def test_bad_rho_is_refused():
    with pytest.raises(ValueError, match="rho"):
        perturbation(some_grads(), -0.1)
    with pytest.raises(ValueError, match="rho"):
        BSAMStep(math.nan)


# -- the loop's step with the rule --------------------------------------------------------------------------------
class Data(Dataset):
    def __init__(self, n=32, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g, dtype=dtype)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=dtype)).unsqueeze(1) + 5
        self.w = torch.rand(n, 1, generator=g, dtype=dtype) + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input": self.x[i], "target": self.y[i], "weight": self.w[i]}


class Net(nn.Module):
    def __init__(self, batch_norm=False, linear=False):
        super().__init__()
        if linear:
            self.body = nn.Identity()
            self.head = nn.Linear(4, 1)
        else:
            self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8) if batch_norm else nn.Identity(), nn.Tanh())
            self.head = nn.Linear(8, 1)

    def forward(self, x, targets=None, smooth=True):
        encoding = self.body(x)
        return {"encoding": encoding, "pred": self.head(encoding)}


class WeightedL1(nn.Module):
    """The authors' loss: (1/B) Σ w_i |f(x_i) − y_i|."""

    def forward(self, model, batch, epoch):
        out = model(batch["input"], batch["target"])
        return {"l1": (batch["weight"] * (out["pred"] - batch["target"]).abs()).mean()}


class TinyTask(Task):
    def __init__(self, optimizer="sgd", dtype=torch.float64, batch_norm=False, linear=False, objective=None,
                 weight_decay=1e-4):
        self.optimizer, self.dtype, self.batch_norm, self.linear = optimizer, dtype, batch_norm, linear
        self.objective, self.weight_decay = objective or WeightedL1(), weight_decay

    def datasets(self):
        return {"train": Data(32, 0, self.dtype), "val": Data(8, 1, self.dtype), "test": Data(8, 2, self.dtype)}

    def build_model(self):
        torch.manual_seed(0)
        return Net(self.batch_norm, self.linear).to(self.dtype)

    def build_objective(self):
        return self.objective

    def build_optimizer(self, model, objective):
        if self.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=self.weight_decay), None
        return torch.optim.Adam(model.parameters(), lr=1e-2), None

    def metrics(self, preds, labels):
        return {"all": {"l1": float(np.abs(preds - labels).mean())}}


def set_up(task, tmp_path, rule, name="run", **kw):
    trainer = Trainer(task, run_dir=tmp_path / name, epochs=1, batch_size=16, step_rule=rule, **kw)
    trainer._set_up(None)
    return trainer


def batches(n=3, dtype=torch.float64):
    data = Data(48, 5, dtype)
    return [{k: v[i * 16:(i + 1) * 16] for k, v in {"input": data.x, "target": data.y, "weight": data.w}.items()}
            for i in range(n)]


def run_steps(trainer, steps):
    meters = DeviceMeters()
    for step, batch in enumerate(steps):
        trainer.train_step(batch, 0, step, meters)
    return [p.detach().clone() for p in trainer.model.parameters()]


def hand_written_bsam(model, steps, rho, lr=0.1, momentum=0.9, weight_decay=1e-4, clip=None):
    """§2.1 written out: g at θ, ε, g̃ at θ + ε, θ − ε, (clip g̃), SGD with momentum and weight decay on g̃."""
    params = list(model.parameters())
    velocity = [None] * len(params)
    for batch in steps:
        def grads():
            loss = (batch["weight"] * (model(batch["input"])["pred"] - batch["target"]).abs()).mean()
            return torch.autograd.grad(loss, params)
        g = grads()
        norm = torch.sqrt(sum((gp ** 2).sum() for gp in g))
        eps = [rho * gp / (norm + 1e-16) for gp in g]
        with torch.no_grad():
            for p, e in zip(params, eps):
                p += e
        g_tilde = list(grads())
        with torch.no_grad():
            for p, e in zip(params, eps):
                p -= e
            if clip is not None:
                total = torch.sqrt(sum((gp ** 2).sum() for gp in g_tilde))
                g_tilde = [gp * min(1.0, clip / (total.item() + 1e-6)) for gp in g_tilde]
            for i, (p, gp) in enumerate(zip(params, g_tilde)):
                d = gp + weight_decay * p
                velocity[i] = d.clone() if velocity[i] is None else momentum * velocity[i] + d
                p -= lr * velocity[i]
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("clip", [None, 0.05])
def test_the_loops_step_is_the_hand_written_bsam_step(tmp_path, clip):
    steps = batches()
    trainer = set_up(TinyTask(), tmp_path, BSAMStep(0.05), grad_clip=clip)
    model = copy.deepcopy(trainer.model)
    got = run_steps(trainer, steps)
    want = hand_written_bsam(model, steps, 0.05, clip=clip)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    plain = run_steps(set_up(TinyTask(), tmp_path, None, "plain", grad_clip=clip), steps)
    assert not torch.allclose(plain[0], got[0], rtol=1e-6)          # the second pass changed the step


def test_without_a_rule_the_step_is_the_bare_pytorch_step(tmp_path):
    steps = batches(dtype=torch.float32)
    trainer = set_up(TinyTask(dtype=torch.float32), tmp_path, None)
    model = copy.deepcopy(trainer.model)
    got = run_steps(trainer, steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for batch in steps:
        optimizer.zero_grad(set_to_none=True)
        WeightedL1()(model, batch, 0)["l1"].backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(got, model.parameters()))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rho_zero_is_the_base_optimisers_step_bit_for_bit(tmp_path, optimizer):
    """Invariant 1, float32, a BatchNorm model (its running statistics move twice per step; the parameters are the
    base step's exactly)."""
    steps = batches(dtype=torch.float32)
    task = lambda: TinyTask(optimizer, torch.float32, batch_norm=True)     # noqa: E731
    zero = run_steps(set_up(task(), tmp_path, BSAMStep(0.0), "zero"), steps)
    base = run_steps(set_up(task(), tmp_path, None, "base"), steps)
    assert all(torch.equal(a, b) for a, b in zip(zero, base))
    small = run_steps(set_up(task(), tmp_path, BSAMStep(1e-3), "small"), steps)
    assert not all(torch.equal(a, b) for a, b in zip(small, base))


def capture_second_gradient(model, batch, rho):
    """g and g̃ of one BSAMStep.between on ``model`` (the loop's ``again`` written out, no optimiser step)."""
    params = list(model.parameters())
    loss = lambda: WeightedL1()(model, batch, 0)["l1"]       # noqa: E731
    loss().backward()
    first = [p.grad.clone() for p in params]

    def again():
        for p in params:
            p.grad = None
        loss().backward()

    before = [p.detach().clone() for p in params]
    BSAMStep(rho).between(params, None, again)
    assert all(torch.equal(p, (b + e) - e) or torch.allclose(p, b) for p, b, e in
               zip(params, before, perturbation(first, rho)[0]))
    return first, [p.grad.clone() for p in params]


def test_a_linear_l1_model_without_a_sign_change_has_the_same_second_gradient():
    """Invariant 3: f linear in θ, L1, no residual changes sign between θ and θ + ε ⇒ g̃ = g."""
    torch.manual_seed(0)
    model = Net(linear=True).double()
    batch = batches(1)[0]
    batch = {**batch, "target": batch["target"] + 100.0 * torch.sign(batch["target"] - 5)}   # residuals far from 0
    first, second = capture_second_gradient(model, batch, 0.05)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # a radius that flips residual signs: the second gradient differs (the invariant's condition matters)
    close = {**batch, "target": model(batch["input"])["pred"].detach() + 1e-3 * torch.randn(16, 1, dtype=torch.float64)}
    first, second = capture_second_gradient(model, close, 5.0)
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


# -- the gradient scaler --------------------------------------------------------------------------------------
def test_with_the_gradient_scaler_the_step_is_the_unscaled_one(tmp_path):
    """The scaler's s = 2^10 multiplies both passes' gradients; ε is computed from the scaled first pass without
    unscaling it, and the step equals the step without a scaler, bit for bit (clipping unscales once, after)."""
    steps = batches(dtype=torch.float32)
    plain = run_steps(set_up(TinyTask(dtype=torch.float32), tmp_path, BSAMStep(0.1), "plain", grad_clip=0.5), steps)
    scaled_trainer = set_up(TinyTask(dtype=torch.float32), tmp_path, BSAMStep(0.1), "scaled", grad_clip=0.5)
    scaled_trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled = run_steps(scaled_trainer, steps)
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))
    assert scaled_trainer.scaler.get_scale() == 2.0 ** 10               # no step was skipped


class InfiniteFirstPass(WeightedL1):
    """Its first call's loss (the step's first pass) is infinite; the second pass's is finite."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, model, batch, epoch):
        self.calls += 1
        loss = super().forward(model, batch, epoch)["l1"]
        return {"l1": loss * math.inf if self.calls == 1 else loss}


def test_a_non_finite_first_pass_skips_the_step_under_the_scaler(tmp_path):
    trainer = set_up(TinyTask(dtype=torch.float32, objective=InfiniteFirstPass()), tmp_path, BSAMStep(0.2))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    after = run_steps(trainer, batches(1, torch.float32))
    assert all(torch.equal(a, b) for a, b in zip(after, before))        # ε = 0 came back exactly; no step
    assert trainer.scaler.get_scale() == 2.0 ** 9                       # the scaler saw the overflow and backed off


# -- the objective's features, recorded once ------------------------------------------------------------------
def test_training_features_are_recorded_from_the_first_pass_only(tmp_path):
    from common.objective import objective_from_flags
    objective = objective_from_flags(loss="l1", stats_from_training=True)
    trainer = set_up(TinyTask(dtype=torch.float32, objective=objective), tmp_path, BSAMStep(0.1))
    steps = batches(2, torch.float32)
    first_encoding = trainer.model(steps[0]["input"])["encoding"].detach()
    run_steps(trainer, steps)
    assert len(objective.recorded) == 2                                 # one entry per step, not per pass
    torch.testing.assert_close(objective.recorded[0][0], first_encoding)    # at θ, not θ + ε


# -- two processes ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    import torch.distributed as dist
    from common import distributed
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from pathlib import Path
    trainer = set_up(TinyTask(), Path(out), BSAMStep(0.1), f"rank{rank}")
    shares = [{k: v[rank * 8:(rank + 1) * 8] for k, v in batch.items()} for batch in batches()]
    torch.save(run_steps(trainer, shares), f"{out}/rank{rank}.pt")
    distributed.shutdown()


@pytest.mark.slow
def test_two_processes_each_with_half_the_batch_equal_one_process(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = run_steps(set_up(TinyTask(), tmp_path, BSAMStep(0.1), "single"), batches())
    for rank in (0, 1):
        for mine, theirs in zip(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True), single):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


# -- weights ------------------------------------------------------------------------------------------------------
# AgeDB-DIR's training histogram (docs/datasets.md §AgeDB: age:count of the shipped split's train rows).
AGEDB_TRAIN = ("1:1 3:4 4:2 5:2 6:4 7:5 8:4 9:2 10:5 11:8 12:6 13:8 14:9 15:15 16:18 17:28 18:60 19:50 20:101 21:103 "
               "22:123 23:152 24:199 25:224 26:215 27:244 28:287 29:253 30:325 31:256 32:318 33:278 34:302 35:353 "
               "36:287 37:310 38:322 39:261 40:326 41:260 42:296 43:265 44:221 45:282 46:227 47:229 48:251 49:207 "
               "50:257 51:227 52:250 53:190 54:198 55:234 56:167 57:183 58:186 59:153 60:185 61:147 62:178 63:158 "
               "64:133 65:171 66:117 67:117 68:155 69:90 70:156 71:85 72:115 73:96 74:78 75:98 76:49 77:44 78:46 "
               "79:26 80:31 81:26 82:24 83:19 84:15 85:20 86:13 87:10 88:7 89:7 90:7 91:7 92:5 93:5 94:3 95:3 96:2 "
               "97:1 98:2 99:1 100:2 101:1")


def test_the_authors_weights_on_agedb_are_raw_inverse_square_roots():
    """§2.1: w = 1/√n(y), not rescaled: AgeDB's mean weight is about 0.076."""
    from common.bins import LabelBins
    from common.lds import prepare_weights
    counts = {int(a): int(n) for a, n in (pair.split(":") for pair in AGEDB_TRAIN.split())}
    ages = np.repeat(list(counts), list(counts.values())).astype(np.float64)
    assert len(ages) == 12208
    rule = bsam.weighting(cli.parse(cli.build_age_parser("t"), ["--bsam"]))
    assert rule == bsam.Weighting("sqrt_inv", False, rescale=False, own=True)
    weights = prepare_weights(ages, rule.reweight, rule.lds, bins=LabelBins(0, 1, 102), rescale=rule.rescale)
    assert np.allclose(weights, [1 / math.sqrt(counts[int(a)]) for a in ages], rtol=1e-6)
    assert weights.mean() == pytest.approx(0.07647, abs=1e-5)        # the spec's "≈ 0.076"


def test_the_weighting_each_choice_asks_for():
    parse = lambda *flags: cli.parse(cli.build_age_parser("t"), list(flags))   # noqa: E731
    assert bsam.weighting(parse("--reweight", "sqrt_inv", "--lds")) == bsam.Weighting("sqrt_inv", True)
    assert bsam.weighting(parse("--bsam", "--bsam_weights", "sqrt_inv")) == bsam.Weighting("sqrt_inv", False,
                                                                                            own=True)
    assert bsam.weighting(parse("--bsam", "--bsam_weights", "reweight", "--reweight", "inverse")) == \
        bsam.Weighting("inverse", False)
    assert bsam.weighting(parse("--bsam", "--bsam_weights", "reweight")) == bsam.Weighting("none", False)


# -- flags ------------------------------------------------------------------------------------------------------
def parser_of(folder):
    if folder in ("agedb-dir", "imdb-wiki-dir"):
        overrides = folder_module("agedb-dir", "train").AGEDB_DEFAULTS if folder == "agedb-dir" else {}
        return cli.build_age_parser("t", **overrides)
    return folder_module(folder, "train").build_parser()


@pytest.mark.parametrize("folder, rho, weights", [("agedb-dir", 0.2, "raw"), ("imdb-wiki-dir", 0.05, "raw"),
                                                  ("nyud2-dir", 0.05, "sqrt_inv"), ("sts-b-dir", 0.05, "sqrt_inv")])
def test_each_benchmarks_defaults_and_the_rule_they_build(folder, rho, weights):
    args = cli.parse(parser_of(folder), ["--bsam"])
    assert (args.rho, args.bsam_weights) == (rho, weights)
    assert f"bsam_{rho:g}_{weights}" in cli.method_tags(args)
    rule = methods.step_rule(args)
    assert isinstance(rule, BSAMStep) and rule.rho == rho
    assert methods.step_rule(cli.parse(parser_of(folder), [])) is None


@pytest.mark.parametrize("flags, sentence", [
    (["--bsam", "--rho", "-0.1"], "--rho must be a finite number ≥ 0"),
    (["--bsam", "--rho", "nan"], "--rho must be a finite number ≥ 0"),
    (["--bsam", "--reweight", "sqrt_inv"], "drop --reweight (and --lds), or pass --bsam_weights reweight"),
    (["--bsam", "--bsam_weights", "sqrt_inv", "--reweight", "inverse", "--lds"], "in place of --reweight inverse"),
    (["--bsam", "--bmse"], "--bmse takes no sample weights"),
    (["--bsam", "--uvote"], "--uvote takes no sample weights"),
])
def test_what_cannot_work_is_one_sentence(flags, sentence, capsys):
    with pytest.raises(SystemExit):
        cli.parse(cli.build_age_parser("t"), flags)
    assert sentence in capsys.readouterr().err


def test_what_can_work_is_accepted_and_flags_without_bsam_are_said_to_do_nothing(capsys):
    for flags in (["--bsam", "--bsam_weights", "reweight", "--reweight", "sqrt_inv", "--lds", "--fds"],
                  ["--bsam", "--bsam_weights", "reweight", "--bmse", "--imp", "bni"],
                  ["--bsam", "--conr", "--regularization_weight", "2"],
                  ["--bsam", "--rho", "0"]):
        assert cli.parse(cli.build_age_parser("t"), flags).bsam
    capsys.readouterr()
    cli.parse(cli.build_age_parser("t"), ["--rho", "0.1"])
    assert "--rho has no effect without --bsam" in capsys.readouterr().err
    cli.parse(cli.build_age_parser("t"), ["--bsam", "--retrain_fc", "--pretrained", "p.pth.tar"])
    assert "unweighted loss" not in capsys.readouterr().err             # BSAM's own weights re-weight RRT's head
