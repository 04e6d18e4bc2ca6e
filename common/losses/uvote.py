"""UVOTE: uncertainty voting ensemble for imbalanced deep regression (Jiang et al., GCPR 2024).

A shared backbone feeds M heads; head i predicts a location ``μ_i`` and a log scale ``log σ_i`` per sample
and is trained with the Laplace negative log-likelihood of the label, the samples re-weighted by the inverse
training-label frequency raised to the power ``r_i``, the exponents spread linearly over [0, 1]
(``r_i = i / (M − 1)``: head 0 is the plain, un-weighted head, head M − 1 the fully inverse-weighted one):

    ℓ_ni = log(2σ_ni) + |y_n − μ_ni| / σ_ni,          log σ clamped to [−5, 5]
    L_i  = mean_n w_ni ℓ_ni,                          w_ni ∝ n(y_n)^(−r_i), mean 1 over the training set
    L    = Σ_i L_i,   or with the dynamic schedule   L = L_0 + (1 − α) Σ_{i>0} L_i,   α = 1 − (e / E)²

(epoch e of E: the re-weighted heads join gradually, the plain head trains from the start). At inference every
sample takes the prediction of the head that is least uncertain about it (``'minvar'``, the paper's vote), on
the heads' raw log scales as the authors' code votes (:func:`uvote_predict`).

The clamp bounds ``σ`` to [e⁻⁵, e⁵] in training; outside it the log scale gets no gradient (``torch.clamp``),
which is what keeps ``|y − μ|/σ`` from exploding early in training.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from common import checks
from common.method import Method, Step, Term, flag, flat_rows
from common.bins import AGE_BINS, LabelBins
from common.lds import KERNELS, check_clip, smoothed_bin_counts

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -5.0, 5.0
RULES = ("minvar", "avg", "avgvar")
#: how the heads' scales enter the vote: the authors' raw log σ, or this repo's earlier clamped σ.
VOTES = ("raw", "clamped")
#: how UVOTE's head layers start: the authors' N(0, 0.01²) weights and zero biases, or PyTorch's default.
INITS = ("authors", "pytorch")
_LOG_2 = float(np.log(2.0))


def uvote_exponents(num_heads: int) -> list[float]:
    """The re-weighting exponents ``r_i = i / (M − 1)``, i = 0 … M − 1 (``[0.0]`` for one head)."""
    if int(num_heads) != num_heads or num_heads < 1:
        raise ValueError(f"uvote_exponents: `num_heads` must be a positive integer, got {num_heads}.")
    num_heads = int(num_heads)
    return [0.0] if num_heads == 1 else [i / (num_heads - 1) for i in range(num_heads)]


def uvote_weight_table(counts, num_heads: int, *, lds: bool = False, lds_kernel: str = "gaussian", lds_ks: int = 5,
                       lds_sigma: float = 2, clip=(5, 1000)) -> np.ndarray:
    """Per-bin, per-head training weights ``w_bi ∝ n_b^(−r_i)`` from a training-label histogram.

    For head i with exponent ``r = r_i`` (:func:`uvote_exponents`) and ``n_b`` training labels in bin b:

    * ``r = 0``: every weight is 1 (no histogram, no smoothing);
    * ``0 < r < 1``: effective counts ``n_b^r``, unclipped (for r = 1/2 this is the repo's ``sqrt_inv``);
    * ``r ≥ 1``: effective counts ``clip(n_b, *clip)^r`` (for r = 1 the repo's ``inverse``, clipped to [5, 1000]);

    with ``lds`` the effective counts are convolved with the LDS window (zero padding), as
    :func:`common.lds.smoothed_bin_counts` does. The weight of bin b is ``1 / effective_b``, scaled per head so
    that the mean weight over the training labels is 1 (``Σ_b n_b w_bi = Σ_b n_b``, the rule of
    :func:`common.lds.prepare_weights`). A bin whose effective count is 0 (no training label, no smoothing or
    clipping to fill it) has no finite weight; it gets ``inf``, and no training label can fall in it.

    Args:
        counts: (B,) training labels per bin (``LabelBins.histogram`` of the training labels; depth: pixels).
        num_heads: M.
        lds, lds_kernel, lds_ks, lds_sigma: label distribution smoothing of the effective counts.
        clip: bounds of the counts for exponents ≥ 1 (None: no clipping).

    Returns:
        (B, M) float64 array.
    """
    where = "uvote_weight_table"
    exponents = uvote_exponents(num_heads)
    checks.check_choice(where, "lds_kernel", lds_kernel, KERNELS)
    counts = np.asarray(counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{where}: `counts` must be a non-empty (B,) histogram, got shape {counts.shape}.")
    if not np.isfinite(counts).all() or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"{where}: `counts` must be finite, non-negative and not all 0.")
    check_clip(where, clip)
    columns = []
    for r in exponents:
        if r == 0:
            columns.append(np.ones(counts.shape[0]))
            continue
        base = np.clip(counts, *clip) if r >= 1 and clip is not None else counts
        # reweight='none' leaves the counts as given: only the LDS convolution applies.
        effective = smoothed_bin_counts(base ** r, "none", lds, lds_kernel, lds_ks, lds_sigma)
        with np.errstate(divide="ignore"):
            per_bin = np.where(effective > 0, 1.0 / np.where(effective > 0, effective, 1.0), np.inf)
        trained = counts > 0
        columns.append(per_bin * (counts.sum() / (counts[trained] * per_bin[trained]).sum()))
    return np.stack(columns, axis=1)


def uvote_head_weights(train_labels, labels, num_heads: int, bins: LabelBins = AGE_BINS, *,
                       lds: bool = False, lds_kernel: str = "gaussian", lds_ks: int = 5, lds_sigma: float = 2,
                       clip=(5, 1000)) -> np.ndarray:
    """Per-sample, per-head training weights ``w_ni ∝ n(y_n)^(−r_i)``: :func:`uvote_weight_table` of the
    training-label histogram on ``bins``, read at each label's bin.

    For ``labels = train_labels`` head ``r = 1/2`` equals ``prepare_weights(…, 'sqrt_inv')`` and head ``r = 1``
    ``prepare_weights(…, 'inverse')``.

    Args:
        train_labels: (T,) training labels, binned on ``bins``.
        labels: (N,) labels to weight (a data set's labels); None: ``train_labels``.
        num_heads: M.
        bins: the label grid (default the age grid ``LabelBins(0, 1, 121)``).
        lds, lds_kernel, lds_ks, lds_sigma, clip: as :func:`uvote_weight_table`.

    Returns:
        (N, M) float32 array.
    """
    where = "uvote_head_weights"
    uvote_exponents(num_heads)
    checks.check_choice(where, "lds_kernel", lds_kernel, KERNELS)
    train = np.asarray(train_labels.detach().cpu() if isinstance(train_labels, torch.Tensor) else train_labels,
                       dtype=np.float64).reshape(-1)
    if train.size == 0:
        raise ValueError(f"{where}: `train_labels` is empty; pass the training labels.")
    if not np.isfinite(train).all():
        raise ValueError(f"{where}: `train_labels` must be finite.")
    if labels is None:
        values = train
    else:
        values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels,
                            dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: `labels` must be finite.")
    table = uvote_weight_table(bins.histogram(train), num_heads, lds=lds, lds_kernel=lds_kernel, lds_ks=lds_ks,
                               lds_sigma=lds_sigma, clip=clip)
    weights = table[bins.index(values)]
    infinite = ~np.isfinite(weights)
    if infinite.any():
        first, head = (int(i[0]) for i in np.nonzero(infinite))
        r = uvote_exponents(num_heads)[head]
        raise ValueError(f"{where}: `labels` holds {values[first]} (position {first}), whose bin has no "
                         f"training label: its weight n^(−{r:g}) is infinite (pass `clip` or `lds`).")
    return weights.astype(np.float32)


def _clamped(log_sigma: torch.Tensor) -> torch.Tensor:
    return log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def _laplace_terms(mu, log_sigma, target):
    """Elementwise ``log 2 + s + |y − μ| e^(−s)``, s = clamped log σ."""
    s = _clamped(log_sigma)
    return _LOG_2 + s + (target - mu).abs() * torch.exp(-s)


def laplace_nll(mu, log_sigma, target, weights=None) -> torch.Tensor:
    """Weighted Laplace NLL ``mean_n w_n (log(2σ_n) + |y_n − μ_n| / σ_n)``, log σ clamped to [−5, 5].

    Args:
        mu, log_sigma: (N,) or (N, 1) location and log scale.
        target: (N,) or (N, 1) labels.
        weights: None (ones), a scalar, (N,) or (N, 1); the mean is over N, not normalised by ``Σ w``.

    Returns:
        0-d loss in float32 (half-precision inputs, autocast) or the inputs' dtype.
    """
    where = "laplace_nll"
    mu = checks.as_tensor(where, "mu", mu)
    checks.check_floating(where, "mu", mu)
    checks.check_nonempty(where, "mu", mu)
    n = mu.shape[0]
    mu = checks.finite_labels_1d(where, "mu", mu, n, "target")
    log_sigma = checks.finite_labels_1d(where, "log_sigma", log_sigma, n, "mu")
    target = checks.finite_labels_1d(where, "target", target, n, "mu")
    dtype = checks.compute_dtype(mu)
    with torch.autocast(mu.device.type, enabled=False):
        mu = mu.to(dtype)
        weights = checks.sample_weights(where, weights, n, mu, "mu")
        terms = _laplace_terms(mu, log_sigma.to(dtype), target.to(device=mu.device, dtype=dtype))
        return (weights * terms).mean()


def _heads(where, mus, log_sigmas, target, head_weights):
    mus = checks.feature_batch(where, "mus", mus, 2)
    n, m = mus.shape
    log_sigmas = checks.as_tensor(where, "log_sigmas", log_sigmas)
    checks.check_same_shape(where, "log_sigmas", log_sigmas, "mus", mus)
    checks.check_finite(where, "mus", mus)
    checks.check_finite(where, "log_sigmas", log_sigmas)
    if target is not None:
        target = checks.finite_labels_1d(where, "target", target, n, "mus")
    if head_weights is not None:
        head_weights = checks.as_tensor(where, "head_weights", head_weights)
        if tuple(head_weights.shape) != (n, m):
            raise ValueError(f"{where}: `head_weights` has shape {tuple(head_weights.shape)}; pass one weight "
                             f"per sample and head, {(n, m)} like `mus` (uvote_head_weights).")
        checks.check_non_negative(where, "head_weights", head_weights)
    return mus, log_sigmas, target, head_weights


def uvote_head_losses(mus, log_sigmas, target, head_weights=None) -> torch.Tensor:
    """The M per-head losses ``L_i = mean_n w_ni ℓ_ni`` (module docstring).

    Args:
        mus, log_sigmas: (N, M) locations and log scales of the M heads.
        target: (N,) or (N, 1) labels.
        head_weights: None (ones) or (N, M) per-sample weights of each head (:func:`uvote_head_weights`).

    Returns:
        (M,) losses, float32 (half precision, autocast) or the inputs' dtype.
    """
    mus, log_sigmas, target, head_weights = _heads("uvote_head_losses", mus, log_sigmas, target, head_weights)
    dtype = checks.compute_dtype(mus)
    with torch.autocast(mus.device.type, enabled=False):
        mus = mus.to(dtype)
        terms = _laplace_terms(mus, log_sigmas.to(dtype), target.to(device=mus.device, dtype=dtype)[:, None])
        if head_weights is not None:
            terms = terms * head_weights.to(device=mus.device, dtype=dtype)
        return terms.mean(0)


def _check_schedule(where, dynamic, epoch, epochs):
    if not dynamic:
        return
    if epoch is None or epochs is None:
        raise ValueError(f"{where}: `dynamic` needs `epoch` and `epochs` (α = 1 − (epoch / epochs)²).")
    checks.check_positive(where, "epochs", epochs)
    if not 0 <= epoch <= epochs:
        raise ValueError(f"{where}: `epoch` must lie in [0, epochs = {epochs}], got {epoch}.")


def uvote_loss(mus, log_sigmas, target, head_weights=None, epoch=None, epochs=None,
               dynamic: bool = False) -> torch.Tensor:
    """The UVOTE training loss (module docstring).

    Args:
        mus, log_sigmas, target, head_weights: as :func:`uvote_head_losses`.
        epoch, epochs: e and E of the dynamic schedule (e counted from 0; read only when ``dynamic``).
        dynamic: ``L_0 + (e/E)² Σ_{i>0} L_i`` instead of ``Σ_i L_i``.

    Returns:
        0-d loss.
    """
    _check_schedule("uvote_loss", dynamic, epoch, epochs)
    heads = uvote_head_losses(mus, log_sigmas, target, head_weights)
    if not dynamic:
        return heads.sum()
    alpha = 1.0 - (epoch / epochs) ** 2
    return heads[0] + (1.0 - alpha) * heads[1:].sum()


def uvote_predict(mus, log_sigmas, rule: str = "minvar", vote: str = "raw"):
    """Combine the heads into one prediction and Laplace scale per sample.

    ``vote='raw'`` (the authors' code): on the heads' raw log scales ``s_ni`` (not clamped), with combination
    weights ``c_ni`` (Σ_i c_ni = 1) the prediction is ``Σ_i c_ni μ_ni`` and the scale ``exp(Σ_i c_ni s_ni)``
    (the log scale combined as the locations):

    * ``'minvar'`` (the paper): ``c`` one-hot at the head of least raw log σ (the first such head on ties);
    * ``'avg'``: ``c = 1/M``: the mean location, the geometric mean of the scales;
    * ``'avgvar'``: ``c ∝ 1/σ`` (the authors' weights, ``exp(−s)``).

    ``vote='clamped'`` (this repo's earlier vote): ``σ_ni = exp(clamp(s_ni, −5, 5))``, the scale ``Σ_i c_ni σ_ni``,
    ``'minvar'`` on the clamped σ, ``'avgvar'`` with ``c ∝ σ⁻²``.

    Args:
        mus, log_sigmas: (N, M).
        rule: ``'minvar'``, ``'avg'`` or ``'avgvar'``.
        vote: ``'raw'`` or ``'clamped'``.

    Returns:
        ``(pred, sigma)``, two (N,) tensors in float32 (half precision) or the inputs' dtype; ``sigma`` is the
        Laplace scale (its standard deviation is ``√2·sigma``).
    """
    where = "uvote_predict"
    checks.check_choice(where, "rule", rule, RULES)
    checks.check_choice(where, "vote", vote, VOTES)
    mus, log_sigmas, _, _ = _heads(where, mus, log_sigmas, None, None)
    dtype = checks.compute_dtype(mus)
    with torch.autocast(mus.device.type, enabled=False):
        mus, s = mus.to(dtype), log_sigmas.to(dtype)
        if vote == "clamped":
            s = _clamped(s)
        if rule == "minvar":
            best = s.argmin(1, keepdim=True)
            return mus.gather(1, best)[:, 0], s.gather(1, best)[:, 0].exp()
        if rule == "avg":
            coef = torch.full_like(s, 1.0 / s.shape[1])
        else:
            # σ⁻² / Σ σ⁻² (clamped) or σ⁻¹ / Σ σ⁻¹ (raw), as a softmax: no overflow.
            coef = torch.softmax((-2 if vote == "clamped" else -1) * s, dim=1)
        if vote == "clamped":
            return (coef * mus).sum(1), (coef * s.exp()).sum(1)
        return (coef * mus).sum(1), (coef * s).sum(1).exp()


class UVOTELoss(nn.Module):
    """:func:`uvote_loss` for M heads, with the dynamic schedule's switch and length.

    ``UVOTELoss(4, dynamic=True, epochs=90)(mus, log_sigmas, target, head_weights, epoch=e)``;
    :meth:`predict` is :func:`uvote_predict`.
    """

    def __init__(self, num_heads: int, dynamic: bool = False, epochs=None):
        super().__init__()
        self.exponents = uvote_exponents(num_heads)
        if dynamic:
            if epochs is None:
                raise ValueError("UVOTELoss: `dynamic` needs `epochs` (the E of α = 1 − (epoch / E)²).")
            checks.check_positive("UVOTELoss", "epochs", epochs)
        self.num_heads, self.dynamic, self.epochs = int(num_heads), dynamic, epochs

    def _check_heads(self, mus):
        if isinstance(mus, torch.Tensor) and mus.dim() == 2 and mus.shape[1] != self.num_heads:
            raise ValueError(f"UVOTELoss: `mus` has {mus.shape[1]} heads (columns); this loss was built for "
                             f"num_heads={self.num_heads}.")

    def forward(self, mus, log_sigmas, target, head_weights=None, epoch=None):
        self._check_heads(mus)
        return uvote_loss(mus, log_sigmas, target, head_weights, epoch, self.epochs, self.dynamic)

    def predict(self, mus, log_sigmas, rule: str = "minvar", vote: str = "raw"):
        self._check_heads(mus)
        return uvote_predict(mus, log_sigmas, rule, vote)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, dynamic={self.dynamic}, epochs={self.epochs}"


# -- wiring ---------------------------------------------------------------------------------------------------
UVOTE_RULES = RULES


class UVOTETerm(Term):
    """UVOTE's loss as the main loss: the heads' ``mus``/``log_sigmas`` (B, M[, H, W]) against the labels on the
    view's scale, each sample (pixel) weighted per head by ``table`` (bins, M) at its label's bin."""

    def __init__(self, loss: UVOTELoss, table, label_bins: LabelBins):
        super().__init__()
        self.loss, self.label_bins = loss, label_bins
        self.register_buffer("table", torch.as_tensor(table).float(), persistent=False)

    def forward(self, step: Step) -> dict:
        labels = flat_rows(step.targets)
        head_weights = self.table.to(device=labels.device)[self.label_bins.index(labels.detach())[:, 0]]
        return {"uvote": self.loss(flat_rows(step.out["mus"]).float(), flat_rows(step.out["log_sigmas"]).float(),
                                   labels.float() / step.view.label_scale, head_weights, epoch=step.epoch)}


class UVOTEMethod(Method):
    """UVOTE (Jiang et al., GCPR 2024): M heads with a Laplace likelihood, head i re-weighted by n^(−i/(M−1)),
    voting at inference; its log-scale heads train at ``--uvote_var_lr`` times the learning rate."""

    name = "uvote"
    switch = "--uvote"
    positive = ("uvote_var_lr",)
    model_flags = ("uvote", "num_branch")
    eval_defaults = {"uvote_rule": "minvar", "uvote_vote": "raw"}

    def add_args(self, parser, *, num_branch: int = 2) -> None:
        g = parser.add_argument_group("UVOTE (Jiang et al., GCPR 2024)")
        g.add_argument("--uvote", action="store_true",
                       help="M heads with Laplace NLL, head i re-weighted by n^(−i/(M−1))")
        g.add_argument("--num_branch", type=int, default=num_branch, help="M, the number of heads")
        g.add_argument("--dynamic_loss", action="store_true",
                       help="the re-weighted heads join with weight (epoch / epochs)²")
        g.add_argument("--uvote_rule", default=None, choices=list(UVOTE_RULES),
                       help="how the heads vote at inference: the head of least σ (minvar, UVOTE), the mean, or "
                            "σ⁻²-weighted (default: an evaluated checkpoint's, else minvar)")
        g.add_argument("--uvote_vote", default=None, choices=list(VOTES),
                       help="the scales the vote reads: raw (the authors': raw log σ; avg: geometric mean of σ; "
                            "avgvar: weights 1/σ) or clamped (this repo's earlier vote: clamped σ, arithmetic mean, "
                            "weights σ⁻²) (default: an evaluated checkpoint's, else raw)")
        g.add_argument("--uvote_init", default="authors", choices=list(INITS),
                       help="how the head layers start: authors (weights N(0, 0.01²), biases 0) or pytorch (the "
                            "layers' default, this repo's earlier start)")
        g.add_argument("--uvote_var_lr", type=float, default=0.1,
                       help="learning-rate factor of the log-scale heads (UVOTE's 0.1)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "uvote"))

    def check(self, parser, args) -> None:
        on = lambda name: bool(flag(args, name))   # noqa: E731
        if on("uvote") and on("vir"):
            parser.error("--uvote and --vir each replace the regression head: pass only one of them.")
        if on("uvote") and on("bmse"):
            parser.error("--uvote trains its own likelihood in place of the regression loss: drop --bmse.")
        if on("uvote") and flag(args, "reweight", "none") != "none":
            parser.error("--uvote re-weights each head itself (head i by n^(−i/(M−1))): drop --reweight (--lds "
                         "then smooths the heads' counts).")
        if on("dynamic_loss") and not on("uvote"):
            parser.error("--dynamic_loss schedules UVOTE's heads: add --uvote.")
        if flag(args, "num_branch", 1) < 1:
            parser.error(f"--num_branch must be ≥ 1, got {args.num_branch}.")

    def tag(self, args):
        return (f"uvote_{args.num_branch}" + ("_dyn" if flag(args, "dynamic_loss") else "")
                + ("_ptinit" if flag(args, "uvote_init") == "pytorch" else ""))

    def head(self, args) -> dict:
        return {"head": "uvote", "num_heads": args.num_branch, "rule": flag(args, "uvote_rule") or "minvar"}

    def prepare_model(self, args, model, spec, log) -> None:
        """The heads' vote (``--uvote_vote``) and, unless ``--uvote_init pytorch``, the authors' start of their
        layers (drawn after the model is built, so that the earlier start draws exactly what it drew)."""
        if not self.enabled(args):
            return
        # The heads are found by what they have (common.models.heads.UVOTEHead imports this file).
        for module in model.modules():
            if hasattr(module, "vote") and callable(getattr(module, "init_as_authors", None)):
                module.vote = flag(args, "uvote_vote") or "raw"
                if flag(args, "uvote_init", "authors") == "authors":
                    module.init_as_authors()

    def main_loss(self, args, data):
        """With ``--lds`` the heads' counts are smoothed (``--lds_kernel --lds_ks --lds_sigma``); counts of
        exponents ≥ 1 are bounded by ``data.count_clip`` (the age rule; None on STS-B and NYUD2)."""
        dynamic = bool(flag(args, "dynamic_loss"))
        table = uvote_weight_table(data.label_counts, args.num_branch, lds=flag(args, "lds", False),
                                   lds_kernel=flag(args, "lds_kernel", "gaussian"), lds_ks=flag(args, "lds_ks", 5),
                                   lds_sigma=flag(args, "lds_sigma", 1.0), clip=data.count_clip)
        return UVOTETerm(UVOTELoss(args.num_branch, dynamic, args.epoch if dynamic else None), table,
                         data.label_bins)

    def param_groups(self, args, model, objective) -> list[dict]:
        factor = flag(args, "uvote_var_lr", 0.1)
        if factor == 1:
            return []
        slow = [p for name, p in model.named_parameters() if p.requires_grad and "log_sigma" in name]
        if not slow:
            return []
        return [{"params": slow, "lr": args.lr * factor, "name": "log_sigma", "follows_lr": True}]


METHOD = UVOTEMethod()
