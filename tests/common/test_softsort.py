"""The soft sort of common/softsort.py (docs/methods.md §12.1.1) against a slow pool-adjacent-violators loop of the
same algorithm (Blondel et al. 2020, L2 regulariser), its Jacobian, gradcheck and the invariants."""
import pytest
import torch

from common.softsort import isotonic_decreasing, soft_sort

D64 = torch.float64


# ------------------------------------------------------------------------------------------------ the slow loop
def pav_decreasing(z):
    """Decreasing L2 isotonic regression of the list ``z`` by pool-adjacent-violators: returns (fit, blocks), each
    block a (start, end) range of positions sharing its mean."""
    blocks = []                                   # [sum, count, start]
    for i, value in enumerate(z):
        blocks.append([value, 1, i])
        # A violation of "non-increasing": the last block's mean above the one before it; pool them.
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count, _ = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fit, ranges = [], []
    for total, count, start in blocks:
        fit += [total / count] * count
        ranges.append((start, start + count))
    return fit, ranges


def soft_sort_loop(theta, eps, descending=False):
    """(values, Jacobian ∂s/∂θ) of the L2 soft sort from its definition, with PAV and its block-averaging
    backward, scattered through the stable sort's permutation."""
    n = len(theta)
    order = sorted(range(n), key=lambda i: -theta[i] if descending else theta[i])
    sorted_values = [theta[i] for i in order]
    w = [(n - k) / eps for k in range(n)]          # (n + 1 − k)/ε for k = 1..n
    z = [w[k] - sorted_values[k] if descending else w[k] + sorted_values[k] for k in range(n)]
    fit, blocks = pav_decreasing(z)
    s = [w[k] - fit[k] if descending else fit[k] - w[k] for k in range(n)]
    jac = [[0.0] * n for _ in range(n)]
    sign = -1.0 if descending else 1.0
    for start, end in blocks:
        for a in range(start, end):
            for b in range(start, end):
                # ∂fit_a/∂z_b = 1/|block|, ∂z_b/∂θ_order[b] = ±1, ∂s_a/∂fit_a = ∓1 (signs cancel: +1 either way).
                jac[a][order[b]] += sign * sign / (end - start)
    return s, jac


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("descending", [False, True])
def test_values_and_jacobian_match_the_pav_loop(seed, descending):
    g = torch.Generator().manual_seed(seed)
    n = [1, 2, 5, 9, 16, 31][seed]
    theta = torch.randn(n, generator=g, dtype=D64) * [0.3, 3.0, 10.0][seed % 3]
    eps = [0.1, 1.0, 0.5][seed % 3]
    want, want_jac = soft_sort_loop(theta.tolist(), eps, descending)
    got = soft_sort(theta, eps, descending=descending)
    assert torch.allclose(got, torch.tensor(want, dtype=D64), rtol=0, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda t: soft_sort(t, eps, descending=descending), theta)
    assert torch.allclose(jac, torch.tensor(want_jac, dtype=D64), rtol=0, atol=1e-10)


def test_isotonic_fit_matches_pav_with_ties_and_batches():
    g = torch.Generator().manual_seed(3)
    z = torch.randint(-3, 4, (4, 12), generator=g).to(D64)       # many equal values and equal block means
    z[1] = 2.0
    got = isotonic_decreasing(z)
    for row, fit in zip(z.tolist(), got):
        assert torch.allclose(fit, torch.tensor(pav_decreasing(row)[0], dtype=D64), rtol=0, atol=1e-12)
    assert (got[:, 1:] <= got[:, :-1] + 1e-12).all()


def test_the_spec_example_and_the_hard_sort_limit():
    assert torch.allclose(soft_sort(torch.tensor([0.0, 100.0], dtype=D64), 0.1), torch.tensor([45.0, 55.0], dtype=D64))
    assert torch.allclose(soft_sort(torch.tensor([100.0, 0.0], dtype=D64), 0.1), torch.tensor([45.0, 55.0], dtype=D64))
    assert torch.allclose(soft_sort(torch.tensor([0.0, 100.0], dtype=D64), 0.1, descending=True),
                          torch.tensor([55.0, 45.0], dtype=D64))
    theta = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=D64) * 20
    assert torch.allclose(soft_sort(theta, 1e-6), torch.sort(theta).values, rtol=0, atol=1e-6)   # w ~ 5e7: rounding
    # Gaps all below 1/ε: nothing is pooled, the soft sort is the hard one (the ages at ε = 0.1).
    ages = torch.tensor([30.0, 22.0, 25.5, 31.0, 40.0], dtype=D64)
    assert torch.allclose(soft_sort(ages, 0.1), torch.sort(ages).values, rtol=0, atol=1e-12)
    # ε → ∞ pools everything into the mean.
    assert torch.allclose(soft_sort(theta, 1e9), theta.mean().expand(50), rtol=0, atol=1e-6)


@pytest.mark.parametrize("descending", [False, True])
def test_sum_is_kept_and_order_does_not_matter(descending):
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(3, 20, generator=g, dtype=D64) * 5
    s = soft_sort(theta, 0.3, descending=descending)
    assert torch.allclose(s.sum(-1), theta.sum(-1), rtol=0, atol=1e-10)
    assert (s[:, 1:] >= s[:, :-1] - 1e-12).all() if not descending else (s[:, 1:] <= s[:, :-1] + 1e-12).all()
    perm = torch.randperm(20, generator=g)
    assert torch.allclose(soft_sort(theta[:, perm], 0.3, descending=descending), s, rtol=0, atol=1e-12)
    # ∂(Σs)/∂θ = 1.
    theta.requires_grad_(True)
    soft_sort(theta, 0.3, descending=descending).sum().backward()
    assert torch.allclose(theta.grad, torch.ones_like(theta))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    theta = (torch.randn(2, 7, generator=g, dtype=D64) * 4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: soft_sort(t, 0.4), (theta,))
    assert torch.autograd.gradcheck(lambda t: soft_sort(t, 0.4, descending=True), (theta,))


def test_order_dtype_and_bad_input():
    theta = torch.tensor([3.0, 1.0, 2.0, 1.0])
    s, order = soft_sort(theta, 0.01, return_order=True)
    assert s.dtype == torch.float32 and order.tolist() == [1, 3, 2, 0]       # stable: the tied 1.0s keep their order
    assert soft_sort(theta.to(torch.bfloat16), 0.01).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="regularization_strength"):
        soft_sort(theta, 0.0)
    with pytest.raises(ValueError, match="floating-point"):
        soft_sort(torch.tensor([1, 2]), 1.0)
    with pytest.raises(ValueError, match="at least one value"):
        soft_sort(torch.zeros(3, 0), 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    theta = torch.randn(4, 300, generator=torch.Generator().manual_seed(0), dtype=D64) * 10
    assert torch.allclose(soft_sort(theta.cuda(), 0.2).cpu(), soft_sort(theta, 0.2), rtol=0, atol=1e-9)
