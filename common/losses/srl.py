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
from common.method import Method, Step, Term, flag


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
    if checks.values_checked() and (bool((slots < 0).any()) or bool((slots >= num_slots).any())):
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


# -- wiring ---------------------------------------------------------------------------------------------------
class SRLTerm(Term):
    """SRL's three losses, weighted ``(w1, w2, w3)``, on the model's ``projection`` and the labels' slots (the
    view's rule), against the per-slot running-mean surrogate the statistics pass keeps."""

    def __init__(self, weights, loss: SRL, surrogate: SRLSurrogate, num_labels: int, view):
        super().__init__()
        self.weights, self.loss, self.surrogate = tuple(weights), loss, surrogate
        self.num_labels, self._view = num_labels, view

    def slot(self, labels: torch.Tensor) -> torch.Tensor:
        """The SRL slots of ``labels``."""
        return self._view.srl_slot(labels, self.num_labels)

    def forward(self, step: Step) -> dict:
        contrastive, enveloping, homogeneity = self.loss(step.share(step.out["projection"]),
                                                         step.share(self.slot(step.targets), False),
                                                         self.surrogate.running_mean)
        w1, w2, w3 = self.weights
        return {"srl_contrastive": w1 * contrastive, "srl_enveloping": w2 * enveloping,
                "srl_homogeneity": w3 * homogeneity}


class SRLMethod(Method):
    """SRL (Dong, Wu et al., CVPR 2025): contrastive, enveloping and homogeneity losses on a projection head."""

    name = "srl"
    switch = "--srl"
    positive = ("temperature", "n_points", "embedding_dim", "srl_num_labels")
    non_negative = ("w1", "w2", "w3")
    model_flags = ("srl", "embedding_dim", "srl_num_labels", "n_points")

    def add_args(self, parser, *, num_labels=121, homogeneity_alpha=-1.0, temp_alias=False) -> None:
        """``temp_alias`` also accepts ``--temp`` for ``--temperature`` (the STS-B reference's name);
        ``num_labels=None`` leaves out ``--srl_num_labels`` (a benchmark whose slots are fixed: NYUD2's depth
        bins)."""
        g = parser.add_argument_group("SRL (Dong, Wu et al., CVPR 2025)")
        g.add_argument("--srl", "--dfr", dest="srl", action="store_true", help="geometric losses with a surrogate")
        g.add_argument("--w1", "--loss_w1", dest="w1", type=float, default=10.0, help="contrastive weight")
        g.add_argument("--w2", "--loss_w2", dest="w2", type=float, default=100.0, help="enveloping weight")
        g.add_argument("--w3", "--loss_w3", dest="w3", type=float, default=0.01, help="homogeneity weight")
        g.add_argument("--temperature", *(["--temp"] if temp_alias else []), dest="temperature", type=float,
                       default=0.3)
        # `--n` is the flag of the reference's age scripts: an explicit alias, not an abbreviation.
        g.add_argument("--n_points", "--n", dest="n_points", type=int, default=2000, help="random points")
        g.add_argument("--embedding_dim", type=int, default=128, help="projection size")
        if num_labels is not None:
            g.add_argument("--srl_num_labels", type=int, default=num_labels, help="label slots L")
        g.add_argument("--srl_homogeneity_alpha", type=float, default=homogeneity_alpha)

    def enabled(self, args) -> bool:
        return bool(flag(args, "srl"))

    def tag(self, args):
        return f"srl_{args.w1:g}_{args.w2:g}_{args.w3:g}_t{args.temperature:g}"

    def term(self, args, data):
        # A benchmark whose slots are fixed (NYUD2's depth bins) says how many; an older checkpoint's saved
        # --srl_num_labels must not override them.
        num_labels = data.view.srl_num_labels or flag(args, "srl_num_labels", 121)
        loss = SRL(num_labels, args.embedding_dim, args.n_points, args.temperature,
                   flag(args, "srl_homogeneity_alpha", -1.0), seed=flag(args, "seed", 0))
        surrogate = SRLSurrogate(num_labels, args.embedding_dim, flag(args, "start_update", 0),
                                 flag(args, "fds_mmt", 0.9))
        return SRLTerm((args.w1, args.w2, args.w3), loss, surrogate, num_labels, data.view)


METHOD = SRLMethod()
