"""SRL: surrogate-driven representation learning with geometric losses (Dong, Wu et al., CVPR 2025).

The reference calls it "DFR" (``dfr_simple``). Per batch, the normalised projections ``u_i`` are averaged per
label slot into centroids; slots absent from the batch take the (detached) surrogate row, i.e. the running
mean projection of that label over the training set. With the row-normalised table ``C`` (L, D):

* contrastive   ``L_con = mean_i CE(u_i·sg(C)ᵀ/τ, c_i)`` over all L slots;
* enveloping    ``L_env = 1 − mean_k max_c cos(C_c, P_k)`` over fixed random unit points ``P``;
* homogeneity   ``L_hom = α Σ_c C_c·C_{c+1} + β Var_c(C_c·C_{c+1})`` (unbiased variance).

``α = −1`` (the AgeDB copy: neighbouring slots pulled together) is the default; ``α = +1`` (IMDB-WIKI/STS-B
copies) is selectable.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks


def srl_random_points(n: int, dim: int, *, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n, dim) points uniform on the unit sphere: standard normals divided by their norms."""
    if n < 1 or dim < 1:
        raise ValueError(f"srl_random_points: `n` and `dim` must be ≥ 1, got n={n}, dim={dim}.")
    gen_device = generator.device if generator is not None else "cpu"
    points = torch.randn(n, dim, generator=generator, dtype=torch.float64, device=gen_device)
    return F.normalize(points, dim=1).to(device=device, dtype=dtype)


def srl_losses(features, labels, surrogate, points, *, temperature=0.3, homogeneity_alpha=-1.0,
               homogeneity_beta=0.1):
    """The three SRL terms (docs/methods.md §7.2).

    Args:
        features: (N, D) projections ``h`` (un-normalised).
        labels: (N,) or (N, 1) label slots in [0, L−1]; float labels are truncated like ``.long()``.
        surrogate: (L, D) per-slot running mean projections (a constant: never receives gradient).
        points: (n, D) fixed random points on the sphere (:func:`srl_random_points`).
        temperature: τ of the contrastive logits.
        homogeneity_alpha, homogeneity_beta: α (either sign: −1 pulls neighbouring slots together) and β ≥ 0 (the
            weight of a variance) of the homogeneity term.

    Returns:
        ``(contrastive, enveloping, homogeneity)``, three 0-d tensors.
    """
    where = "srl_losses"
    checks.check_positive(where, "temperature", temperature)
    checks.check_positive(where, "homogeneity_beta", homogeneity_beta, allow_zero=True)
    features = checks.feature_batch(where, "features", features, 2)
    n, dim = features.shape
    labels = checks.labels_1d(where, "labels", labels, n, "features")
    surrogate = checks.as_tensor(where, "surrogate", surrogate)
    checks.check_ndim(where, "surrogate", surrogate, (2,))
    points = checks.as_tensor(where, "points", points)
    checks.check_ndim(where, "points", points, (2,))
    if surrogate.shape[1] != dim or points.shape[1] != dim:
        raise ValueError(f"{where}: `surrogate` {tuple(surrogate.shape)} and `points` {tuple(points.shape)} "
                         f"must have {dim} columns, like `features` {tuple(features.shape)}.")
    num_slots = surrogate.shape[0]
    if num_slots < 2:
        raise ValueError(f"{where}: `surrogate` must have at least 2 label slots, got {num_slots}.")
    checks.check_finite(where, "features", features)
    checks.check_finite(where, "labels", labels)
    checks.check_finite(where, "surrogate", surrogate)
    slots = labels.long() if labels.is_floating_point() else labels
    if bool((slots < 0).any()) or bool((slots >= num_slots).any()):
        raise ValueError(f"{where}: `labels` must lie in [0, {num_slots - 1}] (one slot per surrogate row), "
                         f"got values in [{labels.min().item()}, {labels.max().item()}].")
    slots = slots.to(features.device)

    dtype = checks.compute_dtype(features)
    with torch.autocast(features.device.type, enabled=False):
        u = F.normalize(features.to(dtype), dim=1)
        sums = torch.zeros(num_slots, dim, dtype=dtype, device=u.device).index_add(0, slots, u)
        counts = torch.bincount(slots, minlength=num_slots).to(dtype)
        centroids = sums / counts.clamp(min=1)[:, None]
        # As the reference: a slot is "empty" when its row sums to exactly 0 (absent labels), and takes the
        # surrogate row then.
        empty = centroids.sum(1) == 0
        table = torch.where(empty[:, None], surrogate.detach().to(u), centroids)
        table = F.normalize(table, dim=1)

        contrastive = F.cross_entropy(u @ table.detach().T / temperature, slots)
        cosine_to_points = table @ F.normalize(points.to(u), dim=1).T          # (L, n)
        enveloping = 1 - cosine_to_points.amax(dim=0).mean()
        neighbour_cosine = (table[:-1] * table[1:]).sum(1)                      # (L−1,)
        homogeneity = homogeneity_alpha * neighbour_cosine.sum() + homogeneity_beta * neighbour_cosine.var()
    return contrastive, enveloping, homogeneity


class SRL(nn.Module):
    """SRL hyper-parameters and its fixed random points (a buffer, saved in checkpoints).

    Args:
        num_labels: L, the number of label slots (AgeDB 102, IMDB-WIKI 187, STS-B 50).
        embedding_dim: D of the projection head (128).
        n_points: number of random points of the enveloping term (CLI ``--n_points``, 2000).
        seed: seed of the generator that draws the points.
    """

    def __init__(self, num_labels, embedding_dim=128, n_points=2000, temperature=0.3, homogeneity_alpha=-1.0,
                 homogeneity_beta=0.1, seed=0):
        super().__init__()
        checks.check_positive("SRL", "temperature", temperature)
        checks.check_positive("SRL", "homogeneity_beta", homogeneity_beta, allow_zero=True)
        self.num_labels = num_labels
        self.temperature = temperature
        self.homogeneity_alpha = homogeneity_alpha
        self.homogeneity_beta = homogeneity_beta
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("points", srl_random_points(n_points, embedding_dim, generator=generator))

    def forward(self, features, labels, surrogate):
        return srl_losses(features, labels, surrogate, self.points, temperature=self.temperature,
                          homogeneity_alpha=self.homogeneity_alpha, homogeneity_beta=self.homogeneity_beta)

    def extra_repr(self):
        return (f"num_labels={self.num_labels}, points={tuple(self.points.shape)}, temperature={self.temperature}, "
                f"alpha={self.homogeneity_alpha}, beta={self.homogeneity_beta}")


class SRLSurrogate(nn.Module):
    """The SRL surrogate: per-label running mean of the projections over the training set (docs/methods.md §7.3).

    After each epoch ≥ ``start_update`` the statistics pass hands :meth:`update` every training projection;
    each label slot present in it moves to ``(1 − f)·mean + f·running_mean`` with ``f = momentum`` (``f = 0`` at
    ``start_update``: the first update replaces the initial zeros). Absent slots keep their rows. This is the
    running mean that the reference reads from an FDS module that never smooths; here it needs no ``--fds``.

    Args:
        num_labels: L, the number of label slots.
        embedding_dim: D of the projections.
        start_update: first epoch whose projections are tracked.
        momentum: EMA factor (the reference's ``--fds_mmt``, 0.9).
    """

    def __init__(self, num_labels: int, embedding_dim: int, start_update: int = 0, momentum: float = 0.9):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"SRLSurrogate: `num_labels` must be ≥ 2, got {num_labels}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"SRLSurrogate: `momentum` must lie in [0, 1), got {momentum}.")
        self.num_labels, self.start_update, self.momentum = num_labels, start_update, momentum
        self.register_buffer("running_mean", torch.zeros(num_labels, embedding_dim))

    @torch.no_grad()
    def update(self, features, labels, epoch: int) -> None:
        """Fold one epoch's projections in. features: (N, D); labels: (N,) or (N, 1) slots in [0, L−1]."""
        if epoch < self.start_update:
            return
        where = "SRLSurrogate.update"
        features = checks.feature_batch(where, "features", features, 2)
        labels = checks.labels_1d(where, "labels", labels, features.shape[0], "features")
        slots = (labels.long() if labels.is_floating_point() else labels).to(self.running_mean.device)
        if bool((slots < 0).any()) or bool((slots >= self.num_labels).any()):
            raise ValueError(f"{where}: `labels` must lie in [0, {self.num_labels - 1}], got values in "
                             f"[{labels.min().item()}, {labels.max().item()}].")
        features = features.detach().to(self.running_mean)
        counts = torch.bincount(slots, minlength=self.num_labels).to(features.dtype)
        sums = torch.zeros_like(self.running_mean).index_add_(0, slots, features)
        present = counts > 0
        mean = sums / counts.clamp(min=1)[:, None]
        factor = 0.0 if epoch == self.start_update else self.momentum
        updated = (1 - factor) * mean + factor * self.running_mean
        self.running_mean.copy_(torch.where(present[:, None], updated, self.running_mean))

    def extra_repr(self):
        return (f"num_labels={self.num_labels}, dim={self.running_mean.shape[1]}, start_update={self.start_update}, "
                f"momentum={self.momentum}")
