"""Balanced MSE (BMC / GAI / BNI), docs/methods.md §5 and golden values §9 G5.

Every expected number is either a golden value of the methods document or the output of the slow loop
implementations in ``tests/reference_loops.py`` (written from the formulas of §5.1).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.losses import BMCLoss, BNILoss, GAILoss, bmc_loss, bni_loss, gai_loss
from reference_loops import bmse_bmc_nll_loop, bmse_bni_nll_loop, bmse_gai_nll_loop

F64 = torch.float64
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ---- §9 G5 inputs -----------------------------------------------------------------------------------------
G5_PRED = [[0.5], [1.5], [3.0], [2.0]]
G5_TARGET = [[0.0], [2.0], [2.5], [4.0]]
G5_VAR = 0.64
G5_GMM = {"means": np.array([[0.5], [3.0]]), "weights": np.array([0.7, 0.3]),
          "variances": np.array([[[0.25]], [[1.0]]])}
G5_CENTERS = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
G5_PROBS = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
G5_BMC = 1.7051652323630346
G5_GAI = -0.11866986593879858
G5_BNI = -0.06568853018572618


def _g5(dtype=F64):
    return torch.tensor(G5_PRED, dtype=dtype), torch.tensor(G5_TARGET, dtype=dtype)


def _gmm_lists(gmm):
    g = {k: np.asarray(v, dtype=np.float64) for k, v in gmm.items()}
    return g["means"].reshape(-1).tolist(), g["weights"].reshape(-1).tolist(), g["variances"].reshape(-1).tolist()


def _random_gmm(rng, k):
    w = rng.uniform(0.2, 1.0, size=k)
    return {"means": rng.normal(2.0, 1.5, size=(k, 1)), "weights": w / w.sum(),
            "variances": rng.uniform(0.05, 2.0, size=(k, 1, 1))}


def _random_buckets(rng, b):
    p = rng.uniform(0.1, 1.0, size=b)
    return np.sort(rng.uniform(-1.0, 5.0, size=b)), p / p.sum()


def _batch(rng, n, duplicates=False):
    target = rng.uniform(0.0, 4.0, size=(n, 1))
    if duplicates:
        target[::2] = target[0]  # several identical targets
    pred = target + rng.normal(0.0, 0.8, size=(n, 1))
    return torch.tensor(pred, dtype=F64), torch.tensor(target, dtype=F64)


BATCHES = [(1, False), (2, False), (7, False), (9, True)]


# ---- golden values (§9 G5) --------------------------------------------------------------------------------
@pytest.mark.parametrize("noise_var", [G5_VAR, torch.tensor(G5_VAR, dtype=F64)])
def test_golden_g5_float64(noise_var):
    pred, target = _g5()
    assert bmc_loss(pred, target, noise_var).item() == pytest.approx(G5_BMC, rel=1e-12)
    assert gai_loss(pred, target, G5_GMM, noise_var).item() == pytest.approx(G5_GAI, rel=1e-12)
    assert bni_loss(pred, target, noise_var, G5_CENTERS, G5_PROBS).item() == pytest.approx(G5_BNI, rel=1e-12)


def test_golden_g5_priors_as_tensors():
    pred, target = _g5()
    gmm = {k: torch.tensor(v) for k, v in G5_GMM.items()}
    assert gai_loss(pred, target, gmm, G5_VAR).item() == pytest.approx(G5_GAI, rel=1e-12)
    out = bni_loss(pred, target, G5_VAR, torch.tensor(G5_CENTERS), torch.tensor(G5_PROBS))
    assert out.item() == pytest.approx(G5_BNI, rel=1e-12)


def test_golden_g5_float32_priors_follow_pred_dtype():
    pred, target = _g5(torch.float32)
    bmc = bmc_loss(pred, target, G5_VAR)
    gai = gai_loss(pred, target, G5_GMM, G5_VAR)  # float64 numpy prior, float32 prediction
    bni = bni_loss(pred, target, G5_VAR, G5_CENTERS, G5_PROBS)
    for out, gold in [(bmc, G5_BMC), (gai, G5_GAI), (bni, G5_BNI)]:
        assert out.dtype == torch.float32 and out.dim() == 0
        assert out.item() == pytest.approx(gold, rel=1e-5, abs=1e-6)


def test_golden_g5_modules():
    pred, target = _g5()
    mods = [(BMCLoss(0.8), G5_BMC), (GAILoss(0.8, G5_GMM), G5_GAI), (BNILoss(0.8, G5_CENTERS, G5_PROBS), G5_BNI)]
    for mod, gold in mods:
        assert isinstance(mod.noise_sigma, torch.nn.Parameter)
        assert mod.noise_sigma.dim() == 0 and mod.noise_sigma.item() == pytest.approx(0.8, rel=1e-7)
        # the only learnable parameter is σ: the priors are constants
        assert [p is mod.noise_sigma for p in mod.parameters()] == [True]
        mod = mod.double()
        with torch.no_grad():
            mod.noise_sigma.fill_(0.8)  # σ = 0.8 exactly in float64 (σ² = 0.64)
        assert mod(pred, target).item() == pytest.approx(gold, rel=1e-12)


# ---- loops on random inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,dup", BATCHES)
def test_bmc_matches_loop(n, dup):
    rng = np.random.default_rng(10 + n)
    pred, target = _batch(rng, n, dup)
    var = torch.tensor(rng.uniform(0.2, 3.0), dtype=F64)
    expected = 2 * var * bmse_bmc_nll_loop(pred, target, var)
    assert bmc_loss(pred, target, var).item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    assert bmc_loss(pred, target, float(var)).item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n,dup", BATCHES)
@pytest.mark.parametrize("k", [1, 3])
def test_gai_matches_loop(n, dup, k):
    rng = np.random.default_rng(100 + n + k)
    pred, target = _batch(rng, n, dup)
    gmm = _random_gmm(rng, k)
    var = torch.tensor(rng.uniform(0.2, 3.0), dtype=F64)
    expected = 2 * var * bmse_gai_nll_loop(pred, target, *_gmm_lists(gmm), var)
    assert gai_loss(pred, target, gmm, var).item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n,dup", BATCHES)
@pytest.mark.parametrize("b", [1, 6])
def test_bni_matches_loop(n, dup, b):
    rng = np.random.default_rng(200 + n + b)
    pred, target = _batch(rng, n, dup)
    centers, probs = _random_buckets(rng, b)
    var = torch.tensor(rng.uniform(0.2, 3.0), dtype=F64)
    expected = 2 * var * bmse_bni_nll_loop(pred, target, centers.tolist(), probs.tolist(), var)
    out = bni_loss(pred, target, var, centers, probs)
    assert out.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("which", ["gai", "bni"])
def test_a_row_mask_gives_the_loss_of_the_chosen_rows_and_its_gradient(which):
    """NYUD2's pixels ≥ 0.7 m are chosen by a mask (fixed shapes): the loop's loss of the selected rows, the same
    gradient on them and none on the others, even where a left-out row's loss is not finite."""
    rng = np.random.default_rng(7)
    pred, target = _batch(rng, 9)
    rows = torch.tensor([True, False, True, True, False, True, False, True, True])
    var = torch.tensor(0.9, dtype=F64)
    gmm, (centers, probs) = _random_gmm(rng, 3), _random_buckets(rng, 5)
    if which == "gai":
        loss_of = lambda p, t, r=None: gai_loss(p, t, gmm, var, r)                            # noqa: E731
        expected = 2 * var * bmse_gai_nll_loop(pred[rows], target[rows], *_gmm_lists(gmm), var)
    else:
        loss_of = lambda p, t, r=None: bni_loss(p, t, var, centers, probs, r)                 # noqa: E731
        expected = 2 * var * bmse_bni_nll_loop(pred[rows], target[rows], centers.tolist(), probs.tolist(), var)
    masked_pred = pred.clone().requires_grad_()
    masked = loss_of(masked_pred, target, rows)
    assert masked.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    masked.backward()
    chosen = pred[rows].clone().requires_grad_()
    loss_of(chosen, target[rows]).backward()
    torch.testing.assert_close(masked_pred.grad[rows], chosen.grad, rtol=1e-12, atol=1e-14)
    assert (masked_pred.grad[~rows] == 0).all()
    torch.testing.assert_close(loss_of(pred, target, torch.ones(9, dtype=torch.bool)), loss_of(pred, target),
                               rtol=1e-14, atol=0)
    far = pred.clone()
    far[1] = 1e200                                    # its loss overflows to inf; left out, the mean is finite
    assert loss_of(far, target, rows).item() == pytest.approx(expected.item(), rel=1e-10)
    with pytest.raises(ValueError, match="rows"):
        loss_of(pred, target, rows[:5])
    with pytest.raises(ValueError, match="subset of rows"):
        BMCLoss(1.0)(pred, target, rows)


# ---- §5.6 invariants ----------------------------------------------------------------------------------------
def test_bmc_equals_scaled_cross_entropy():  # §5.6.1
    rng = np.random.default_rng(1)
    pred, target = _batch(rng, 11)
    var = 1.7
    logits = -(pred - target.T) ** 2 / (2 * var)
    expected = 2 * var * F.cross_entropy(logits, torch.arange(11))
    assert bmc_loss(pred, target, var).item() == pytest.approx(expected.item(), rel=1e-12)


def test_bmc_single_sample_is_zero():  # §5.6.1
    pred = torch.tensor([[3.0]], dtype=F64)
    target = torch.tensor([[-1.0]], dtype=F64)
    assert bmc_loss(pred, target, 0.5).item() == pytest.approx(0.0, abs=1e-12)


def test_bmc_shift_and_permutation_invariant():  # §5.6.2
    rng = np.random.default_rng(2)
    pred, target = _batch(rng, 9, duplicates=True)
    base = bmc_loss(pred, target, 0.9).item()
    assert bmc_loss(pred + 7.25, target + 7.25, 0.9).item() == pytest.approx(base, rel=1e-10)
    perm = torch.from_numpy(rng.permutation(9))
    assert bmc_loss(pred[perm], target[perm], 0.9).item() == pytest.approx(base, rel=1e-12)


def test_bmc_positive_for_perfect_predictions():  # §5.6.3
    target = torch.tensor([[0.0], [0.4], [1.5], [1.5], [3.0]], dtype=F64)
    var = 0.8
    expected = 0.0
    for i in range(5):
        expected += math.log(sum(math.exp(-(target[i, 0].item() - target[j, 0].item()) ** 2 / (2 * var))
                                 for j in range(5)))
    expected = 2 * var * expected / 5
    out = bmc_loss(target.clone(), target, var).item()
    assert out > 0
    assert out == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n,dup", [(2, False), (7, False), (9, True)])
def test_bni_with_batch_targets_equals_bmc_minus_log_n(n, dup):  # §5.6.4
    rng = np.random.default_rng(300 + n)
    pred, target = _batch(rng, n, dup)
    var = 1.3
    bni = bni_loss(pred, target, var, target.reshape(-1).numpy(), np.full(n, 1.0 / n))
    bmc = bmc_loss(pred, target, var)
    assert bni.item() == pytest.approx(bmc.item() - 2 * var * math.log(n), rel=1e-10, abs=1e-12)


def test_gai_with_zero_variances_equals_bni():  # §5.6.5
    rng = np.random.default_rng(4)
    pred, target = _batch(rng, 7)
    centers, probs = _random_buckets(rng, 5)
    gmm = {"means": centers.reshape(5, 1), "weights": probs, "variances": np.zeros((5, 1, 1))}
    var = 0.7
    assert gai_loss(pred, target, gmm, var).item() == pytest.approx(
        bni_loss(pred, target, var, centers, probs).item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("which", ["gai", "bni"])
def test_target_gradient_is_plain_mse_gradient(which):  # §5.6.6
    rng = np.random.default_rng(5)
    pred, target = _batch(rng, 7)
    target.requires_grad_(True)
    var = rng.uniform(0.3, 2.0)
    if which == "gai":
        loss = gai_loss(pred, target, _random_gmm(rng, 3), var)
    else:
        loss = bni_loss(pred, target, var, *_random_buckets(rng, 6))
    loss.backward()
    expected = -2 * (pred - target.detach()) / 7
    torch.testing.assert_close(target.grad, expected, rtol=1e-10, atol=1e-12)


# ---- gradients ---------------------------------------------------------------------------------------------
def test_gradcheck_wrt_pred_and_target():
    rng = np.random.default_rng(6)
    pred, target = _batch(rng, 5)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    gmm = _random_gmm(rng, 2)
    centers, probs = _random_buckets(rng, 4)
    assert torch.autograd.gradcheck(lambda p, t: bmc_loss(p, t, 0.9), (pred, target))
    assert torch.autograd.gradcheck(lambda p, t: gai_loss(p, t, gmm, 0.9), (pred, target))
    assert torch.autograd.gradcheck(lambda p, t: bni_loss(p, t, 0.9, centers, probs), (pred, target))


def _module_and_nll(which, rng, sigma):
    if which == "bmc":
        return BMCLoss(sigma), bmse_bmc_nll_loop
    if which == "gai":
        gmm = _random_gmm(rng, 3)
        return GAILoss(sigma, gmm), lambda p, t, v: bmse_gai_nll_loop(p, t, *_gmm_lists(gmm), v)
    centers, probs = _random_buckets(rng, 5)
    return BNILoss(sigma, centers, probs), lambda p, t, v: bmse_bni_nll_loop(p, t, centers.tolist(), probs.tolist(), v)


@pytest.mark.parametrize("which", ["bmc", "gai", "bni"])
def test_noise_sigma_gradient_uses_detached_factor(which):
    """∂L/∂σ = 2σ²_sg · ∂(mean NLL)/∂σ (§5): the factor in front is a constant for autograd."""
    rng = np.random.default_rng(7)
    pred, target = _batch(rng, 6)
    mod, nll = _module_and_nll(which, rng, 1.4)
    mod = mod.double()
    loss = mod(pred, target)
    loss.backward()
    sigma = torch.tensor(mod.noise_sigma.item(), dtype=F64, requires_grad=True)
    mean_nll = nll(pred, target, sigma ** 2)
    mean_nll.backward()
    expected_grad = 2 * sigma.item() ** 2 * sigma.grad.item()
    assert loss.item() == pytest.approx(2 * sigma.item() ** 2 * mean_nll.item(), rel=1e-10)
    assert mod.noise_sigma.grad.item() == pytest.approx(expected_grad, rel=1e-9, abs=1e-12)
    # …and it is not the gradient of the fully differentiated 2σ²·NLL
    full = 4 * sigma.item() * mean_nll.item() + expected_grad
    assert mod.noise_sigma.grad.item() != pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("which", ["bmc", "gai", "bni"])
def test_module_forward_equals_function(which):
    rng = np.random.default_rng(8)
    pred, target = _batch(rng, 5)
    gmm = _random_gmm(rng, 3)
    centers, probs = _random_buckets(rng, 5)
    if which == "bmc":
        mod, fn = BMCLoss(0.6), lambda v: bmc_loss(pred, target, v)
    elif which == "gai":
        mod, fn = GAILoss(0.6, gmm), lambda v: gai_loss(pred, target, gmm, v)
    else:
        mod, fn = BNILoss(0.6, centers, probs), lambda v: bni_loss(pred, target, v, centers, probs)
    mod = mod.double()
    expected = fn(mod.noise_sigma.detach() ** 2)
    assert mod(pred, target).item() == pytest.approx(expected.item(), rel=1e-12)


# ---- dtypes ------------------------------------------------------------------------------------------------
def test_bfloat16_consistent_with_float32():
    rng = np.random.default_rng(9)
    pred, target = _batch(rng, 16)
    pred_bf, target_bf = pred.to(torch.bfloat16), target.to(torch.bfloat16)
    pred32, target32 = pred_bf.float(), target_bf.float()  # the same (rounded) inputs in float32
    gmm = _random_gmm(rng, 3)
    centers, probs = _random_buckets(rng, 6)
    calls = [lambda p, t: bmc_loss(p, t, 1.2), lambda p, t: gai_loss(p, t, gmm, 1.2),
             lambda p, t: bni_loss(p, t, 1.2, centers, probs)]
    for fn in calls:
        out_bf = fn(pred_bf, target_bf)
        out32 = fn(pred32, target32)
        assert out_bf.dtype == torch.bfloat16 and out32.dtype == torch.float32
        assert out_bf.float().item() == pytest.approx(out32.item(), rel=5e-2, abs=5e-2)


# ---- bad inputs ----------------------------------------------------------------------------------------------
def test_bad_shapes_raise():
    pred = torch.zeros(4, 1, dtype=F64)
    with pytest.raises(ValueError, match="target"):
        bmc_loss(pred, torch.zeros(3, 1, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="target"):
        gai_loss(pred, torch.zeros(3, 1, dtype=F64), G5_GMM, 1.0)
    with pytest.raises(ValueError, match="target"):
        bni_loss(pred, torch.zeros(3, 1, dtype=F64), 1.0, G5_CENTERS, G5_PROBS)


@pytest.mark.parametrize("bad", [0.0, -0.5, torch.tensor(0.0), torch.tensor(-2.0)])
def test_non_positive_noise_var_raises(bad):
    pred, target = _g5()
    with pytest.raises(ValueError, match="noise_var"):
        bmc_loss(pred, target, bad)
    with pytest.raises(ValueError, match="noise_var"):
        gai_loss(pred, target, G5_GMM, bad)
    with pytest.raises(ValueError, match="noise_var"):
        bni_loss(pred, target, bad, G5_CENTERS, G5_PROBS)


@pytest.mark.parametrize("weights", [np.array([0.5, -0.1, 0.3, 0.2, 0.1]), np.zeros(5)])
def test_bad_bucket_weights_raise(weights):
    pred, target = _g5()
    with pytest.raises(ValueError, match="bucket_weights"):
        bni_loss(pred, target, 1.0, G5_CENTERS, weights)
    with pytest.raises(ValueError, match="bucket_weights"):
        BNILoss(1.0, G5_CENTERS, weights)(pred.float(), target.float())


@pytest.mark.parametrize("missing", ["means", "weights", "variances"])
def test_gmm_missing_key_raises(missing):
    pred, target = _g5()
    gmm = {k: v for k, v in G5_GMM.items() if k != missing}
    with pytest.raises(ValueError, match=f"gmm|{missing}"):
        gai_loss(pred, target, gmm, 1.0)


# ---- CUDA ----------------------------------------------------------------------------------------------------
@cuda
@needs_cuda
def test_cuda_matches_cpu():
    rng = np.random.default_rng(11)
    pred, target = _batch(rng, 9, duplicates=True)
    gmm = _random_gmm(rng, 3)
    centers, probs = _random_buckets(rng, 6)
    calls = [lambda p, t: bmc_loss(p, t, 0.8), lambda p, t: gai_loss(p, t, gmm, 0.8),
             lambda p, t: bni_loss(p, t, 0.8, centers, probs)]
    for fn in calls:
        out = fn(pred.to("cuda"), target.to("cuda"))
        assert out.device.type == "cuda"
        assert out.item() == pytest.approx(fn(pred, target).item(), rel=1e-10)
    for mod in [BMCLoss(0.8), GAILoss(0.8, gmm), BNILoss(0.8, centers, probs)]:
        mod = mod.double()
        cpu = mod(pred, target)
        mod = mod.to("cuda")
        assert mod.noise_sigma.device.type == "cuda"
        out = mod(pred.to("cuda"), target.to("cuda"))
        assert out.device.type == "cuda"
        assert out.item() == pytest.approx(cpu.item(), rel=1e-10)
        out.backward()
        assert mod.noise_sigma.grad.device.type == "cuda"


@pytest.mark.parametrize("folder", ["nyud2-dir", "sts-b-dir"])
def test_noise_sigma_group_inherits_the_optimizers_weight_decay(folder):
    """The references add σ's group to an optimiser built with weight decay, so σ decays too (docs/methods.md
    §5.3): one Adam step with a zero gradient moves σ only through that decay."""
    from folders import folder_module
    train = folder_module(folder, "train")
    task_class = getattr(folder_module(folder, "task"), {"nyud2-dir": "NYUD2Task", "sts-b-dir": "STSTask"}[folder])
    args = train.build_parser().parse_args(["--bmse", "--imp", "gai", "--sigma_lr", "0.01", "--weight_decay", "0.1"])
    task = object.__new__(task_class)
    task.args = args
    sigma = torch.nn.Parameter(torch.tensor(1.0))
    # An objective holding only σ where Balanced MSE's term keeps it (its method names σ's group).
    from types import SimpleNamespace
    objective = SimpleNamespace(part=lambda name: SimpleNamespace(loss=SimpleNamespace(noise_sigma=sigma)))
    optimizer, _ = task.build_optimizer(torch.nn.Linear(2, 1), objective)
    group = next(g for g in optimizer.param_groups if any(p is sigma for p in g["params"]))
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.1
    sigma.grad = torch.zeros(())
    optimizer.step()
    assert sigma.item() == pytest.approx(1.0 - 0.01, rel=1e-6)     # Adam's first step: lr · sign(0.1 · σ)
