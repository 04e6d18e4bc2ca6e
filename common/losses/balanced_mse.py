"""Balanced MSE (Ren et al., CVPR 2022): GAI, BMC and BNI.

Each variant is ``(2σ²)_sg · mean_i ℓ_i`` with the per-sample negative log-likelihood of the balanced
likelihood

    ℓ_i = −log N(y_i; ŷ_i, σ²) + log ∫ N(ŷ_i; y', σ²) p_train(y') dy'      (constants cancelled)

where ``p_train`` is a Gaussian mixture (GAI), a bucket histogram (BNI) or the batch targets (BMC).
The ``2σ²`` factor is detached: the value is in MSE units while σ still learns from the NLL.
``σ²`` is the ``noise_var`` argument; the modules hold ``noise_sigma`` as a learnable parameter.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag


def _prepare(where, pred, target, noise_var):
    pred = checks.as_tensor(where, "pred", pred)
    target = checks.as_tensor(where, "target", target)
    checks.check_floating(where, "pred", pred)
    checks.check_nonempty(where, "pred", pred)
    checks.check_same_shape(where, "target", target, "pred", pred)
    checks.check_ndim(where, "pred", pred, (1, 2))
    checks.check_finite(where, "pred", pred)
    checks.check_finite(where, "target", target)
    if not isinstance(noise_var, torch.Tensor):
        noise_var = torch.tensor(float(noise_var), dtype=pred.dtype, device=pred.device)
    if noise_var.numel() != 1:
        raise ValueError(f"{where}: `noise_var` must be a scalar (σ²), got shape {tuple(noise_var.shape)}.")
    noise_var = noise_var.reshape(())
    if checks.values_checked() and (not bool(noise_var > 0) or not bool(torch.isfinite(noise_var))):
        raise ValueError(f"{where}: `noise_var` (σ²) must be a finite positive number, got {noise_var.item()}.")
    return pred.reshape(pred.shape[0], -1), target.reshape(pred.shape[0], -1), noise_var


def _one_dimensional(where, pred):
    if pred.shape[1] != 1:
        raise ValueError(f"{where}: `pred` must hold one value per sample ((N,) or (N, 1)), "
                         f"got {pred.shape[1]} per sample.")


def bmc_loss(pred, target, noise_var) -> torch.Tensor:
    """Batch-based Monte-Carlo: ``2σ²_sg · CE(−‖ŷ_i − y_j‖² / 2σ², i)`` over the batch.

    pred, target: (N,) or (N, d) (d > 1: isotropic multivariate version); noise_var: σ², scalar.
    """
    pred, target, noise_var = _prepare("bmc_loss", pred, target, noise_var)
    logits = -torch.cdist(pred, target).pow(2) if pred.shape[1] > 1 else -(pred - target.T).pow(2)
    logits = logits / (2 * noise_var)
    labels = torch.arange(pred.shape[0], device=pred.device)
    return F.cross_entropy(logits, labels) * (2 * noise_var).detach()


def _prior_tensor(values, like: torch.Tensor) -> torch.Tensor:
    """A prior array (list, numpy or tensor) as a flat tensor in ``like``'s dtype and device.

    Lists and arrays go through float64 first: ``torch.as_tensor([0.4, ...])`` would round them to float32.
    """
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    return values.to(device=like.device, dtype=like.dtype).reshape(-1)


def _gmm_tensors(where, gmm, like):
    if not isinstance(gmm, dict) or any(k not in gmm for k in ("means", "weights", "variances")):
        raise ValueError(f"{where}: `gmm` must be a dict with keys 'means' (K,1), 'weights' (K,) and "
                         "'variances' (K,1,1).")
    parts = [_prior_tensor(gmm[k], like) for k in ("means", "weights", "variances")]
    if len({p.numel() for p in parts}) != 1:
        raise ValueError(f"{where}: `gmm` means, weights and variances must have the same number of components, "
                         f"got {[p.numel() for p in parts]}.")
    means, weights, variances = parts
    if bool((weights < 0).any()) or bool((variances < 0).any()) or not bool(weights.sum() > 0):
        raise ValueError(f"{where}: `gmm` weights must be non-negative with a positive sum and its "
                         "variances non-negative.")
    return means, weights, variances


def gai_loss(pred, target, gmm, noise_var, rows=None) -> torch.Tensor:
    """GMM-based analytic integration (1-D labels).

    ``ℓ_i = (ŷ_i − y_i)²/2σ² + ½ log σ² + log Σ_k π_k N(ŷ_i; μ_k, v_k + σ²)·√(2π)``.

    gmm: ``{'means': (K,1), 'weights': (K,), 'variances': (K,1,1)}`` (numpy or torch); cast to pred's dtype.
    rows: (N,) bool, the rows the mean runs over (None: all; see :func:`_row_mean`).
    """
    where = "gai_loss"
    pred, target, noise_var = _prepare(where, pred, target, noise_var)
    _one_dimensional(where, pred)
    means, weights, variances = _gmm_tensors(where, gmm, pred)
    mse_term = (pred - target).pow(2) / (2 * noise_var) + 0.5 * torch.log(noise_var)   # (N, 1)
    total_var = variances + noise_var                                                   # (K,)
    log_terms = torch.log(weights) - 0.5 * torch.log(total_var) - (pred - means).pow(2) / (2 * total_var)
    loss = _row_mean(mse_term.squeeze(1) + torch.logsumexp(log_terms, dim=1), rows)
    return loss * (2 * noise_var).detach()


def bni_loss(pred, target, noise_var, bucket_centers, bucket_weights, rows=None) -> torch.Tensor:
    """Bin-based numerical integration (1-D labels).

    ``ℓ_i = (ŷ_i − y_i)²/2σ² + log Σ_b p_b exp(−(ŷ_i − c_b)²/2σ²)``.

    bucket_centers, bucket_weights: (B,) bucket centres (label units) and probabilities (normalised here);
    cast to pred's dtype and device. rows: (N,) bool, the rows the mean runs over (None: all).
    """
    where = "bni_loss"
    pred, target, noise_var = _prepare(where, pred, target, noise_var)
    _one_dimensional(where, pred)
    centers = _prior_tensor(bucket_centers, pred)
    probs = _prior_tensor(bucket_weights, pred)
    if centers.shape != probs.shape:
        raise ValueError(f"{where}: `bucket_centers` {tuple(centers.shape)} and `bucket_weights` "
                         f"{tuple(probs.shape)} must have the same length.")
    if checks.values_checked() and (bool((probs < 0).any()) or not bool(probs.sum() > 0)
                                    or not bool(torch.isfinite(probs).all())):
        raise ValueError(f"{where}: `bucket_weights` must be finite, non-negative and sum to more than 0.")
    probs = probs / probs.sum()
    mse_term = (pred - target).pow(2).squeeze(1) / (2 * noise_var)
    log_terms = torch.log(probs) - (pred - centers).pow(2) / (2 * noise_var)
    loss = _row_mean(mse_term + torch.logsumexp(log_terms, dim=1), rows)
    return loss * (2 * noise_var).detach()


def _row_mean(losses: torch.Tensor, rows) -> torch.Tensor:
    """The mean of the (N,) per-row ``losses`` over the rows where ``rows`` (N,) is true (all when None): NYUD2's
    pixels at or beyond 0.7 m, chosen by a mask, so the shapes stay fixed and nothing waits for the device. No row
    chosen gives NaN, as the mean of none."""
    if rows is None:
        return losses.mean()
    rows = rows.reshape(-1)
    if rows.shape != losses.shape:
        raise ValueError(f"balanced MSE: `rows` has {rows.numel()} entries for {losses.numel()} rows.")
    chosen = rows.to(losses.dtype)
    # where, not a product: a non-finite loss on a row left out must not reach the mean.
    return torch.where(rows, losses, torch.zeros((), dtype=losses.dtype, device=losses.device)).sum() / chosen.sum()


class _BalancedMSE(nn.Module):
    def __init__(self, init_noise_sigma: float):
        super().__init__()
        checks.check_positive(type(self).__name__, "init_noise_sigma", init_noise_sigma)
        self.noise_sigma = nn.Parameter(torch.tensor(float(init_noise_sigma)))

    def noise_var(self, like: torch.Tensor) -> torch.Tensor:
        """σ² in ``like``'s dtype (squared after the cast, so float64 predictions get a float64 σ²)."""
        return self.noise_sigma.to(like.dtype) ** 2

    def extra_repr(self):
        return f"noise_sigma={self.noise_sigma.item():.4g}"


class BMCLoss(_BalancedMSE):
    """:func:`bmc_loss` with a learnable ``noise_sigma`` (CLI ``--init_noise_sigma``, ``--sigma_lr``)."""

    def forward(self, pred, target, rows=None):
        if rows is not None:     # its batch-wide softmax would need the rows left out of its columns too
            raise ValueError("BMCLoss: a subset of rows is not supported; select them before the loss.")
        return bmc_loss(pred, target, self.noise_var(pred))


class GAILoss(_BalancedMSE):
    """:func:`gai_loss` with a learnable ``noise_sigma`` and the training-label GMM as buffers."""

    def __init__(self, init_noise_sigma: float, gmm: dict):
        super().__init__(init_noise_sigma)
        means, weights, variances = _gmm_tensors("GAILoss", gmm, torch.empty(0, dtype=torch.float64))
        self.register_buffer("gmm_means", means)
        self.register_buffer("gmm_weights", weights)
        self.register_buffer("gmm_variances", variances)

    def forward(self, pred, target, rows=None):
        gmm = {"means": self.gmm_means, "weights": self.gmm_weights, "variances": self.gmm_variances}
        return gai_loss(pred, target, gmm, self.noise_var(pred), rows)


class BNILoss(_BalancedMSE):
    """:func:`bni_loss` with a learnable ``noise_sigma`` and the bucket prior as buffers."""

    def __init__(self, init_noise_sigma: float, bucket_centers, bucket_weights):
        super().__init__(init_noise_sigma)
        float64 = torch.empty(0, dtype=torch.float64)
        self.register_buffer("bucket_centers", _prior_tensor(bucket_centers, float64))
        self.register_buffer("bucket_weights", _prior_tensor(bucket_weights, float64))

    def forward(self, pred, target, rows=None):
        return bni_loss(pred, target, self.noise_var(pred), self.bucket_centers, self.bucket_weights, rows)


# -- wiring ---------------------------------------------------------------------------------------------------
class BalancedMSETerm(Term):
    """Balanced MSE as the main loss: the view's rows (NYUD2: every pixel, the mean over those at or beyond 0.7 m)
    on its label scale (STS-B: score/5)."""

    def __init__(self, loss: _BalancedMSE):
        super().__init__()
        self.loss = loss

    def forward(self, step: Step) -> dict:
        pred, targets, rows = step.view.main_rows(step.out["pred"].float(), step.targets)
        scale = step.view.label_scale
        if scale != 1:
            pred, targets = pred / scale, targets / scale
        return {"bmse": self.loss(pred, targets, rows)}


class BalancedMSE(Method):
    """Balanced MSE (Ren et al., CVPR 2022): GAI, BMC or BNI in place of the regression loss, with a learnable
    noise σ in its own optimiser group."""

    name = "bmse"
    switch = "--bmse"
    independent = ("balanced_metric",)      # selects checkpoints with any loss
    positive = ("init_noise_sigma",)
    non_negative = ("sigma_lr",)

    def add_args(self, parser, *, imps=("gai", "bmc", "bni"), balanced_metric=True, reweighted_prior=False) -> None:
        """``imps`` are the ``--imp`` choices the benchmark can run (NYUD2: gai and bni, BMC's N×N matrix over a
        batch's pixels does not fit), ``balanced_metric=False`` leaves that selection flag out;
        ``reweighted_prior``: ``--reweight sqrt_inv`` shapes BNI's prior (NYUD2's references), so it is not refused
        with ``--bmse --imp bni``."""
        parser.bmse_reweighted_prior = reweighted_prior
        g = parser.add_argument_group("Balanced MSE (Ren et al., CVPR 2022)")
        g.add_argument("--bmse", action="store_true", help="Balanced MSE instead of --loss")
        g.add_argument("--imp", default="gai", choices=list(imps), help="implementation")
        g.add_argument("--gmm", default="", help="GMM file from data/preprocess_gmm.py (default <data_dir>/gmm.npz)")
        g.add_argument("--init_noise_sigma", type=float, default=1.0)
        g.add_argument("--sigma_lr", type=float, default=1e-2)
        g.add_argument("--fix_noise_sigma", action="store_true")
        if balanced_metric:
            g.add_argument("--balanced_metric", action="store_true",
                           help="select checkpoints by the balanced (per-label mean) val metric")

    def enabled(self, args) -> bool:
        return bool(flag(args, "bmse"))

    def check(self, parser, args) -> None:
        if self.enabled(args) and hasattr(args, "loss") and args.loss not in ("l1", "mse"):
            parser.error("--bmse replaces the regression loss: drop --loss.")
        if self.enabled(args) and args.init_noise_sigma <= 0:
            parser.error("--init_noise_sigma must be positive.")
        # Balanced MSE takes no sample weights: a re-weighting would be computed and not applied. With BNI,
        # --reweight with --lds smooths its prior (the references' flag set), and on NYUD2 --reweight sqrt_inv
        # shapes it.
        reweight = flag(args, "reweight", "none")
        shapes_prior = flag(args, "imp") == "bni" and \
            (flag(args, "lds") or getattr(parser, "bmse_reweighted_prior", False))
        if self.enabled(args) and reweight != "none" and not shapes_prior:
            parser.error(f"--bmse --imp {args.imp} takes no sample weights, so --reweight {reweight} would have no "
                         "effect: drop --reweight.")

    def tag(self, args):
        return f"bmse_{args.imp}_{args.init_noise_sigma:g}"

    def main_loss(self, args, data):
        if args.imp == "bmc":
            loss = BMCLoss(args.init_noise_sigma)
        elif args.imp == "gai":
            from common.gmm import load_gmm
            loss = GAILoss(args.init_noise_sigma, load_gmm(data.gmm_file))
        else:
            loss = BNILoss(args.init_noise_sigma, *data.bni_prior)
        loss.noise_sigma.requires_grad_(not flag(args, "fix_noise_sigma", False))
        return BalancedMSETerm(loss)

    def param_groups(self, args, model, objective) -> list[dict]:
        # σ trains at --sigma_lr, unscheduled, unless --fix_noise_sigma froze it.
        sigma = objective.part("bmse").loss.noise_sigma
        if not sigma.requires_grad:
            return []
        return [{"params": [sigma], "lr": flag(args, "sigma_lr", 1e-2), "name": "noise_sigma", "follows_lr": False}]


METHOD = BalancedMSE()
