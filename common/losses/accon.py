"""ACCon: angle-compensated contrastive regulariser for deep imbalanced regression (AAAI 2025).

A supervised contrastive loss on L2-normalised features whose negatives are not pushed apart uniformly: a pair
whose labels differ by Δ is pulled towards the feature angle ``π|Δ|/M``, so the angle between two features grows
linearly with their label distance, up to π at ``|Δ| = M``. Written from the maths of the authors' code
(Haifengtao/ACCon @ efd6610), the specification in ``methods-2025.md`` §4; none of that code is used here.

**Age variant** (:func:`accon_loss`, ``variant='age'``). The V views of B samples are stacked view-major into
N = V·B rows ``F`` (row r is view ⌊r/B⌋ of sample r mod B) with labels ``y_r``. For r ≠ s:

    pos_rs = 1[y_r = y_s],   Δ_rs = y_r − y_s,   φ_rs = π(1 − Δ_rs / M),
    c_rs = clamp(F_r·F_s, −1, 1),   σ_rs = √(1 − c_rs² + τ),   τ = 1e-6,
    l_rs = c_rs / T − m_r,   m_r = max_s c_rs / T   (over every s, the row itself included; no gradient),
    n_rs = l_rs for positives,   (c_rs cos φ_rs − σ_rs |sin φ_rs|) / T otherwise,
    LP_rs = l_rs − log Σ_{s' ≠ r} exp(n_rs'),
    A_r = (Σ_s pos_rs LP_rs + τ) / (Σ_s pos_rs + τ),   L = −(T / T_b) · mean_r A_r.

For ``|Δ| ≤ M`` a negative's logit is ``−cos(θ_rs − π|Δ_rs|/M) / T`` (θ the features' angle, up to τ),
smallest when ``θ = π|Δ|/M``. As in the authors' code, the shift ``m_r`` (= 1/T for unit rows: the row's own
similarity) lowers the positives only: in the denominator a positive weighs ``e^(−1/T)`` against the negatives
(e^−20 at T = 0.05, negligible), and each positive's log-probability, hence the loss, carries an additive
``≈ 1/T_b``. An anchor without a positive contributes the constant ``−T/T_b`` (no gradient); with two views every
anchor has one.

**STS-B variant** (``variant='stsb'``, one view): the positives are the pairs whose labels are equal after
rounding to 0.1, **the pair (r, r) included**, and the ratio is one global one,
``A = (Σ_{r,s} pos_rs LP_rs + τ) / (Σ_{r,s} pos_rs + τ)``, ``L = −(T/T_b) A``; the rest as above (the authors'
defaults M = 5, T = T_b = 1). Every anchor then has a positive (itself), so a batch of distinct labels still
receives the angle term; this repo uses this variant on NYUD2 too (one view, images' mean depths almost never
equal).

The authors cast ``Δ`` and ``pos`` to float32 even for float64 features (so ``Σ pos + τ`` is rounded in float32);
here both stay in the computation's dtype unless ``reference_casts=True`` (float32 training is the same either
way; the switch exists for the float64 comparison at 1e-12). Cost: one (N, N) similarity table, O(N²·d), no loop.
No host read: non-finite features give a non-finite loss, not an exception.

The authors' model (``ACConHead``): a projection ``fc_ctr`` Linear(d, 512) of the encoding gives ``p``; the
prediction is ``ReLU(Linear(512, 1)(p))`` (ages) or ``Linear(2000, 1)(n̂(p))`` (STS-B: d = 12,000 → 2,000); ACCon
regularises ``n̂(p)``.
"""
from __future__ import annotations

import functools
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.method import Method, Step, Term, flag

VARIANTS = ("age", "stsb")
TAU = 1e-6              # the authors' τ: in σ_rs and in both sums of A
STSB_DECIMALS = 1       # the STS-B variant's positives: labels equal after rounding to 0.1


def _check_hyper(where, temperature, base_temperature, label_range, variant):
    checks.check_positive(where, "temperature", temperature)
    if base_temperature is not None:
        checks.check_positive(where, "base_temperature", base_temperature)
    checks.check_positive(where, "label_range", label_range)
    checks.check_choice(where, "variant", variant, VARIANTS)


def accon_loss(features, labels, *, temperature: float = 0.05, base_temperature: float | None = None,
               label_range: float = 100.0, variant: str = "age", reference_casts: bool = False) -> torch.Tensor:
    """ACCon (module docstring).

    Args:
        features: (B, V, d), the V views of B samples (stacked view-major here), or (N, d) rows that already are
            the stacked views (``torch.cat([view1, view2])``); L2-normalised here (``n̂``: unit rows pass as they
            are, up to rounding).
        labels: for (B, V, d) features one per sample, (B,) or (B, 1); for (N, d) one per row, (N,) or (N, 1).
            Only compared and subtracted (never differentiated).
        temperature: T (the authors: 0.05 on the ages, 1 on STS-B).
        base_temperature: T_b; None: T (the loss is then ``−mean A``).
        label_range: M, the label distance mapped to the angle π (ages: 100; STS-B: 5).
        variant: ``'age'`` (positives: other rows of equal label; per-anchor ratio) or ``'stsb'`` (positives:
            labels equal at 0.1, the row itself included; one global ratio).
        reference_casts: compute Δ (and φ) and the positive mask's sum in float32 as the authors' code does
            (it changes float64 results in the 7th digit; float32 ones not at all).

    Returns:
        0-d loss; float64 for float64 features, float32 otherwise (half precision and autocast included).
    """
    where = "accon_loss"
    _check_hyper(where, temperature, base_temperature, label_range, variant)
    features = checks.as_tensor(where, "features", features)
    checks.check_ndim(where, "features", features, (2, 3))
    features = checks.feature_batch(where, "features", features, features.dim())
    labels = checks.as_tensor(where, "labels", labels)
    labels = checks.labels_1d(where, "labels", labels, features.shape[0], "features")
    if features.dim() == 3:
        # View-major: row v·B + b is view v of sample b, as the authors' torch.cat(torch.unbind(f, 1)).
        views = features.shape[1]
        features = features.transpose(0, 1).reshape(-1, features.shape[2])
        labels = labels.repeat(views)
    dtype = checks.compute_dtype(features)
    base = temperature if base_temperature is None else base_temperature
    with torch.autocast(features.device.type, enabled=False):
        z = F.normalize(features.to(dtype), dim=1)
        cosine = (z @ z.T).clamp(-1.0, 1.0)
        n = cosine.shape[0]
        with torch.no_grad():
            y = labels.detach().to(device=z.device, dtype=dtype)
            eye = torch.eye(n, dtype=torch.bool, device=z.device)
            if variant == "stsb":
                keys = torch.round(y, decimals=STSB_DECIMALS)
                positive = keys[:, None] == keys[None, :]                       # the diagonal included
            else:
                positive = (y[:, None] == y[None, :]) & ~eye
            delta = y[:, None] - y[None, :]
            if reference_casts:
                delta = delta.float()
            angle = math.pi * (1 - delta / label_range)
            cos_angle, sin_angle = torch.cos(angle), torch.sin(angle).abs()
            shift = cosine.amax(dim=1, keepdim=True) / temperature              # m_r: the row's own 1/T
            weight = positive.to(torch.float32 if reference_casts else dtype)
        logits = cosine / temperature - shift
        sigma = torch.sqrt(1 - cosine.square() + TAU)
        pushed = (cosine * cos_angle - sigma * sin_angle) / temperature
        # Positives enter the denominator with their shifted logit, negatives with the angle's, unshifted; the
        # anchor itself is not in it.
        denominator = torch.where(positive, logits, pushed).masked_fill(eye, -torch.inf)
        log_prob = logits - torch.logsumexp(denominator, dim=1, keepdim=True)
        if variant == "stsb":
            ratio = ((weight * log_prob).sum() + TAU) / (weight.sum() + TAU)
        else:
            ratio = (((weight * log_prob).sum(1) + TAU) / (weight.sum(1) + TAU)).mean()
        return -(temperature / base) * ratio.to(dtype)


class ACCon(nn.Module):
    """:func:`accon_loss` with its hyper-parameters (the authors' age defaults: T = 0.05, M = 100)."""

    def __init__(self, temperature: float = 0.05, base_temperature: float | None = None, label_range: float = 100.0,
                 variant: str = "age", reference_casts: bool = False):
        super().__init__()
        _check_hyper("ACCon", temperature, base_temperature, label_range, variant)
        self.temperature, self.base_temperature = temperature, base_temperature
        self.label_range, self.variant, self.reference_casts = label_range, variant, reference_casts

    def forward(self, features, labels):
        return accon_loss(features, labels, temperature=self.temperature, base_temperature=self.base_temperature,
                          label_range=self.label_range, variant=self.variant, reference_casts=self.reference_casts)

    def extra_repr(self):
        return (f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
                f"label_range={self.label_range}, variant={self.variant!r}")


class ACConHead(nn.Module):
    """The authors' regression head: ``p = fc_ctr(x)`` (Linear(in_dim, proj_dims)), ``pred = regressor(p)``
    (ages; with ``normalized``, STS-B: ``regressor(n̂(p))``), through a ReLU with ``relu`` (the ages' model).

    ``forward(x (B, in_dim))`` → ``{'pred': (B, 1), 'accon_projection': p (B, proj_dims)}``; ACCon reads the
    projection (its own key: SRL's ``projection`` may sit beside it). Per-pixel maps are not taken: NYUD2 keeps
    its own head and ACCon reads the features (``kernel_size`` must be None).
    """

    def __init__(self, in_dim: int, kernel_size: int | None = None, *, proj_dims: int = 512, relu: bool = True,
                 normalized: bool = False):
        super().__init__()
        if kernel_size is not None:
            raise ValueError("ACConHead: the projection head takes (B, E) vectors; a per-pixel model keeps its own "
                             "head (ACCon then reads its features).")
        self.fc_ctr = nn.Linear(in_dim, proj_dims)
        self.regressor = nn.Linear(proj_dims, 1)
        self.relu, self.normalized = bool(relu), bool(normalized)

    def forward(self, features: torch.Tensor) -> dict:
        projection = self.fc_ctr(features)
        pred = self.regressor(F.normalize(projection, dim=1) if self.normalized else projection)
        return {"pred": F.relu(pred) if self.relu else pred, "accon_projection": projection}

    @torch.no_grad()
    def start_at_labels(self, mean: float, std: float) -> None:
        """``--head_start labels``: the regressor's bias = the label mean, so a zero projection predicts the mean
        (``std`` is not used; a point head)."""
        self.regressor.bias.fill_(float(mean))

    def extra_repr(self):
        return f"relu={self.relu}, normalized={self.normalized}"


# -- wiring ---------------------------------------------------------------------------------------------------
class ACConTerm(Term):
    """λ · ACCon on the pass over the views when the batch has them (the age protocol: the two views are the main
    pass, 2B rows), else on the main pass (NYUD2, STS-B: one view); ``key`` is what it reads: the head's
    ``accon_projection``, or (NYUD2) the ``encoding`` as the view gives it per sample (each image's flattened map,
    its mean depth)."""

    reads_views = True

    def __init__(self, weight: float, loss: ACCon, key: str = "accon_projection"):
        super().__init__()
        self.weight, self.loss, self.key = weight, loss, key

    def forward(self, step: Step) -> dict:
        if step.views_out is not None:
            out, labels = step.views_out, step.view_targets
        else:
            out, labels = step.out, step.targets
        features, labels = step.view.per_sample(step.share(out[self.key]), step.share(labels, False))
        return {"accon": self.weight * self.loss(features, labels)}


class ACConMethod(Method):
    """ACCon (AAAI 2025), with ``--accon`` at weight λ (``--accon_weight``): on the ages and STS-B with the
    authors' projection head (``--proj_dims``), on NYUD2 on the per-image features of its own head."""

    name = "accon"
    switch = "--accon"
    model_flags = ("accon", "proj_dims", "accon_relu", "accon_normalize")
    positive = ("accon_temperature", "accon_base_temperature", "accon_label_range", "proj_dims")
    non_negative = ("accon_weight",)

    def add_args(self, parser, *, weight=1.0, temperature=0.05, label_range=100.0, variant="age", head=True,
                 proj_dims=512, relu=1, normalize=0, augment=None) -> None:
        """A benchmark's defaults; ``head=False`` (NYUD2) leaves out the head's flags (its own head stays),
        ``augment=None`` (one view: NYUD2, STS-B) ``--accon_augment``."""
        g = parser.add_argument_group("ACCon (AAAI 2025)")
        g.add_argument("--accon", action="store_true", help="angle-compensated contrastive regulariser")
        g.add_argument("--accon_weight", type=float, default=weight, help="λ, ACCon's weight")
        g.add_argument("--accon_temperature", type=float, default=temperature,
                       help="T (the authors' --temperature)")
        g.add_argument("--accon_base_temperature", type=float, default=None,
                       help="T_b; the loss is scaled by T/T_b (default: T)")
        g.add_argument("--accon_label_range", type=float, default=label_range,
                       help="M: a label distance of M maps to the angle π")
        g.add_argument("--accon_variant", default=variant, choices=list(VARIANTS),
                       help="age: positives are the other rows of equal label, one ratio per anchor; stsb: labels "
                            "equal at 0.1, the row itself included, one global ratio (the one-view form)")
        if head:
            g.add_argument("--proj_dims", type=int, default=proj_dims, help="size of the head's projection fc_ctr")
            g.add_argument("--accon_relu", type=int, default=relu, choices=[0, 1],
                           help="1: a ReLU on the prediction, as the authors' age model (predictions ≥ 0)")
            g.add_argument("--accon_normalize", type=int, default=normalize, choices=[0, 1],
                           help="1: the output layer reads n̂(p), as the authors' STS-B model (0: p, the ages')")
        if augment is not None:
            g.add_argument("--accon_augment", default=augment, choices=["rnc", "main"],
                           help="the two views' augmentation: RnC's (the authors' AgeDB runs) or the main one")

    def enabled(self, args) -> bool:
        return bool(flag(args, "accon"))

    def reuses_views(self, args) -> bool:
        # The authors train the regression loss on both views (2B outputs): one pass over them serves every loss.
        return True

    def check(self, parser, args) -> None:
        if not self.enabled(args):
            return
        on = lambda name: bool(flag(args, name))   # noqa: E731
        has_head = flag(args, "proj_dims") is not None
        if has_head and (on("uvote") or on("vir")):
            parser.error("--accon brings its own head (the fc_ctr projection it regularises) and --uvote/--vir "
                         "replace the head: pass only one of them.")
        stage = flag(args, "rnc_stage", "none")
        if stage != "none":
            parser.error(f"--rnc_stage {stage} is RnC's two-stage protocol (the trunk by RnC alone, then a linear head "
                         "on it): drop --accon, or use --rnc, the one-stage regulariser, beside it.")
        if not has_head and flag(args, "accon_variant") == "age":
            parser.error("--accon_variant age takes as positives only rows of equal label, and NYUD2's images "
                         "(one view) almost never share their mean depth, so ACCon would pass no gradient: use "
                         "--accon_variant stsb (each image its own positive).")
        if on("conr") and flag(args, "conr_views", 2) == 3:
            # One pass over the two views serves every loss (reuses_views): ConR reads it, as with --conr_views 2.
            args.conr_views = 2
            print("note: --accon trains the regression loss on the two views, so ConR reads that same pass "
                  "(--conr_views 2).", file=sys.stderr)

    def tag(self, args):
        base = flag(args, "accon_base_temperature")
        return (f"accon_{args.accon_weight:g}_t{args.accon_temperature:g}_m{args.accon_label_range:g}"
                + ("" if base is None else f"_tb{base:g}") + ("_stsb" if args.accon_variant == "stsb" else ""))

    def head(self, args) -> dict | None:
        if flag(args, "proj_dims") is None:
            return None                 # NYUD2: its own per-pixel head; ACCon reads its features
        return {"head": functools.partial(ACConHead, proj_dims=args.proj_dims, relu=bool(flag(args, "accon_relu", 1)),
                                          normalized=bool(flag(args, "accon_normalize", 0)))}

    def term(self, args, data):
        if not args.accon_weight:
            return None
        key = "accon_projection" if flag(args, "proj_dims") is not None else "encoding"
        return ACConTerm(args.accon_weight, ACCon(args.accon_temperature, flag(args, "accon_base_temperature"),
                                                  args.accon_label_range, args.accon_variant), key)


METHOD = ACConMethod()
