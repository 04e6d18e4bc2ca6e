"""Feature distribution smoothing (FDS; Yang et al., ICML 2021).

FDS keeps per-bucket running statistics (mean, variance) of the features, smooths them across neighbouring
buckets with a kernel after every epoch, and during training re-calibrates each feature from its bucket's
statistics to the smoothed ones:

    x ← (x − μ_b) · sqrt(clamp(σ̃²_b / σ²_b, c_min, c_max)) + μ̃_b.

Everything is vectorised: labels are bucketised once per call and the statistics are gathered/scattered with
``index_add_``/``index_select``; there is no Python loop over buckets or samples. Features are either one
vector per sample, ``(N, D)`` with labels ``(N,)``/``(N, 1)``, or a per-pixel map, ``(B, C, H, W)`` with labels
``(B, 1, H, W)`` (depth: every pixel is bucketed by its own depth and calibrated with its bucket's statistics).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checks
from common.bins import LabelBins
from common.lds import KERNELS, kernel_window
from common.method import Method, flag

EDGE_RULES = ("present", "clamp")


class FDS(nn.Module):
    """FDS over scalar labels (docs/methods.md §3).

    Args:
        feature_dim: D, the feature size (age ResNet-50: 2048; depth: 128 channels).
        bucket_num, bucket_start: FDS tracks bins ``bucket_start … bucket_num − 1`` of the label grid
            (K = bucket_num − bucket_start rows).
        start_update: first epoch whose statistics are collected (its update replaces, not averages).
        start_smooth: first epoch at which :meth:`smooth` calibrates.
        kernel, ks, sigma: the smoothing window across buckets (sum-normalised).
        momentum: EMA factor of the running statistics; None for a cumulative average.
        clip_min, clip_max: bounds of the variance ratio (age: 0.1, 10; depth 0.2, 5; STS-B 0.5, 2).
        bins: the label grid (:class:`~common.bins.LabelBins`); default integer labels, ``LabelBins(0, 1,
            bucket_num)``. Its ``num_bins`` must equal ``bucket_num``.
        edge_rule: what happens to labels outside bins ``bucket_start … bucket_num − 1``:

            * ``'present'`` (age, the reference): a label below goes to row 0 only when a label exactly equal to
              the first bucket's value is in the same call, and a label at or above the last bucket's value
              goes to row K−1 only when that exact value is present; otherwise it is skipped (not counted,
              not calibrated);
            * ``'clamp'`` (depth, STS-B): every label is clamped into the tracked buckets.
        alias_last_epoch: reproduce the reference's aliasing: after the first roll-over the last-epoch
            statistics follow every update of the running ones, one epoch ahead of the smoothed statistics
            (default: copied at the roll-over, the intended "last epoch"; docs/reference-differences.md).
        fill_empty: after each update, give every bucket absent from it its neighbours' statistics, as the
            STS-B reference does (docs/methods.md §3.3): scanning rows 0…K−1 in order, the first row copies
            row 1, the last copies row K−2, any other the mean of the row before (already filled) and the row
            after (not yet filled). Default off (age, depth).
        skip_invalid_buckets: reproduce the NYUD2/STS-B references' calibration: a bucket with any dimension of
            zero running variance (v1 ≤ 0) is left uncalibrated as a whole (default: its valid dimensions are
            calibrated, the age rule and the intent; docs/methods.md §3.5).
    """

    def __init__(self, feature_dim, bucket_num=100, bucket_start=3, start_update=0, start_smooth=1,
                 kernel="gaussian", ks=5, sigma=2, momentum=0.9, clip_min=0.1, clip_max=10.0,
                 bins: LabelBins | None = None, edge_rule: str = "present", alias_last_epoch: bool = False,
                 fill_empty: bool = False, skip_invalid_buckets: bool = False):
        super().__init__()
        if bucket_num - bucket_start < 2:
            raise ValueError(f"FDS: need at least two buckets, got bucket_num={bucket_num}, "
                             f"bucket_start={bucket_start}.")
        if (ks - 1) // 2 >= bucket_num - bucket_start:
            raise ValueError(f"FDS: kernel size ks={ks} is too large for {bucket_num - bucket_start} buckets "
                             "(reflect padding needs K > (ks − 1) / 2).")
        bins = LabelBins(0, 1, bucket_num) if bins is None else bins
        if bins.num_bins != bucket_num:
            raise ValueError(f"FDS: `bins` has {bins.num_bins} bins but bucket_num={bucket_num}.")
        checks.check_choice("FDS", "edge_rule", edge_rule, EDGE_RULES)
        self.bins, self.edge_rule, self.alias_last_epoch = bins, edge_rule, alias_last_epoch
        self.skip_invalid_buckets = skip_invalid_buckets
        self.fill_empty = fill_empty
        self.feature_dim = feature_dim
        self.bucket_num, self.bucket_start = bucket_num, bucket_start
        self.start_update, self.start_smooth = start_update, start_smooth
        self.current_epoch = 0      # the training epoch, told once per epoch by the trainer (set_epoch)
        self.momentum = momentum
        self.clip_min, self.clip_max = clip_min, clip_max
        self.kernel_name, self.ks, self.sigma = kernel, ks, sigma
        k = bucket_num - bucket_start
        window = torch.as_tensor(kernel_window(kernel, ks, sigma, normalise="sum", dtype="float32"))
        self.register_buffer("kernel_window", window)
        self.register_buffer("running_mean", torch.zeros(k, feature_dim))
        self.register_buffer("running_var", torch.ones(k, feature_dim))
        self.register_buffer("running_mean_last_epoch", torch.zeros(k, feature_dim))
        self.register_buffer("running_var_last_epoch", torch.ones(k, feature_dim))
        self.register_buffer("smoothed_mean_last_epoch", torch.zeros(k, feature_dim))
        self.register_buffer("smoothed_var_last_epoch", torch.ones(k, feature_dim))
        self.register_buffer("num_samples_tracked", torch.zeros(k))
        self.register_buffer("epoch", torch.tensor([start_update], dtype=torch.long))
        # Calibration tables, derived from the last-epoch buffers; row K is the identity for skipped labels.
        self.register_buffer("_shift_from", torch.zeros(k + 1, feature_dim), persistent=False)
        self.register_buffer("_scale", torch.ones(k + 1, feature_dim), persistent=False)
        self.register_buffer("_shift_to", torch.zeros(k + 1, feature_dim), persistent=False)
        # Loading a state dict rewrites the last-epoch buffers: rebuild the tables from them afterwards.
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh_calibration())

    @property
    def num_buckets(self) -> int:
        return self.bucket_num - self.bucket_start

    def extra_repr(self):
        return (f"feature_dim={self.feature_dim}, buckets={self.bucket_start}..{self.bucket_num - 1}, "
                f"kernel={self.kernel_name}(ks={self.ks}, sigma={self.sigma}), momentum={self.momentum}, "
                f"start_update={self.start_update}, start_smooth={self.start_smooth}")

    # -- inputs ---------------------------------------------------------------------------------------------
    def _check(self, where, features, labels):
        """(N, D) features and (N,) labels; a (B, C, H, W) map with (B, 1, H, W) labels is flattened per pixel."""
        features = checks.as_tensor(where, "features", features)
        checks.check_ndim(where, "features", features, (2, 4))
        checks.check_floating(where, "features", features)
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"FDS.{where}: `features` has {features.shape[1]} channels; this FDS was built for "
                             f"feature_dim={self.feature_dim}.")
        if features.dim() == 4:
            labels = checks.as_tensor(where, "labels", labels)
            batch, _, height, width = features.shape
            if tuple(labels.shape) != (batch, 1, height, width):
                raise ValueError(f"FDS.{where}: per-pixel `labels` must have shape {(batch, 1, height, width)} "
                                 f"for features {tuple(features.shape)}, got {tuple(labels.shape)}.")
            features = features.permute(0, 2, 3, 1).reshape(-1, self.feature_dim)
            labels = labels.reshape(-1)
        labels = checks.labels_1d(where, "labels", labels, features.shape[0], "features")
        checks.check_finite(f"FDS.{where}", "features", features)
        checks.check_finite(f"FDS.{where}", "labels", labels)
        if labels.numel() and checks.values_checked() and bool((labels < self.bins.start).any()):
            raise ValueError(f"FDS.{where}: `labels` must be ≥ {self.bins.start:g} (the label grid's start), got "
                             f"minimum {labels.min().item()}.")
        return features, labels

    def bucketize(self, labels: torch.Tensor) -> torch.Tensor:
        """(N,) labels → (N,) long rows in [0, K]; row K means "skipped" (outside the buckets, ``'present'``)."""
        k = self.num_buckets
        if self.bins.rule == "scale" and self.bins.width == 1 and self.bins.start == 0:
            bins = labels.floor() if labels.is_floating_point() else labels   # integer grid: stays on device
        else:
            bins = self.bins.index(labels)
        rows = (bins - self.bucket_start).clamp(0, k - 1).to(torch.long)
        if self.edge_rule == "clamp":
            return rows
        first = self.bins.start + self.bucket_start * self.bins.width
        last = self.bins.start + (self.bins.num_bins - 1) * self.bins.width
        below, above = labels <= first, labels >= last
        rows = torch.where(below & ~(labels == first).any(), torch.full_like(rows, k), rows)
        rows = torch.where(above & ~(labels == last).any(), torch.full_like(rows, k), rows)
        return rows

    # -- statistics ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_last_epoch_stats(self, epoch: int) -> None:
        """Called after epoch ``epoch``'s statistics pass, before :meth:`update_running_stats`.

        Copies the running statistics to the last-epoch buffers (the reference aliases them) and smooths
        them across buckets with the kernel (reflect padding).
        """
        if epoch != int(self.epoch) + 1:
            return
        self.epoch += 1
        self.running_mean_last_epoch.copy_(self.running_mean)
        self.running_var_last_epoch.copy_(self.running_var)
        self.smoothed_mean_last_epoch.copy_(self._smooth_across_buckets(self.running_mean_last_epoch))
        self.smoothed_var_last_epoch.copy_(self._smooth_variances(self.running_var_last_epoch))
        self.refresh_calibration()

    def _smooth_variances(self, stats: torch.Tensor) -> torch.Tensor:
        """The variances' smoothing across buckets: the same kernel as the means' (VIR's squares it)."""
        return self._smooth_across_buckets(stats)

    def _smooth_across_buckets(self, stats: torch.Tensor) -> torch.Tensor:
        half = (self.ks - 1) // 2
        per_dim = stats.T.unsqueeze(1)                                   # (D, 1, K)
        padded = F.pad(per_dim, (half, half), mode="reflect")
        window = self.kernel_window.to(stats.dtype).view(1, 1, -1)
        return F.conv1d(padded, window).squeeze(1).T

    @torch.no_grad()
    def update_running_stats(self, features, labels, epoch: int) -> None:
        """Fold the per-bucket mean/variance of one epoch's features into the running statistics.

        features: (N, D) or per pixel (B, C, H, W) (moved to the buffers' device); labels: (N,), (N, 1) or
        (B, 1, H, W). A bucket with n samples gets
        the unbiased variance (0 when n = 1); the EMA factor is ``momentum`` (0 at ``start_update``).
        """
        if epoch < int(self.epoch):
            return
        counts, mean, squares = self._moments("update_running_stats", features, labels)
        var = squares / (counts - 1).clamp(min=1)[:, None]
        self._fold(counts, mean, var, epoch)

    def _moments(self, where, features, labels):
        """Per-bucket (count, mean, sum of squared deviations) of a batch, in the buffers' dtype: (K,), (K, D),
        (K, D)."""
        features, labels = self._check(where, features, labels)
        features = features.detach().to(self.running_mean)
        rows = self.bucketize(labels.to(features.device))
        k = self.num_buckets
        counts = torch.bincount(rows, minlength=k + 1)[:k].to(features.dtype)
        sums = torch.zeros(k + 1, self.feature_dim, dtype=features.dtype, device=features.device)
        sums.index_add_(0, rows, features)
        mean = sums[:k] / counts.clamp(min=1)[:, None]
        # Two passes over the features (sums, then squared deviations from the bucket mean): exact where
        # E[x²] − E[x]² would cancel in float32; in-place, so no (N, D) temporary beyond the gathered means.
        deviation = torch.cat([mean, mean.new_zeros(1, self.feature_dim)]).index_select(0, rows)
        deviation.sub_(features).square_()
        squares = torch.zeros_like(sums).index_add_(0, rows, deviation)[:k]
        return counts, mean, squares

    def statistics(self) -> "FDSStatistics":
        """A streaming accumulator for one statistics pass whose features do not fit in memory at once (NYUD2:
        600 images × 128 channels × 114×152 pixels); ``add`` each batch, then ``commit(epoch)``."""
        return FDSStatistics(self)

    @torch.no_grad()
    def _fold(self, counts, mean, var, epoch: int) -> None:
        """Fold one epoch's per-bucket counts (K,), means and unbiased variances (K, D) into the running stats."""
        present = counts > 0
        self.num_samples_tracked += counts
        if epoch == self.start_update:
            factor = 0.0
        elif self.momentum is None:
            factor = (1 - counts / self.num_samples_tracked.clamp(min=1))[:, None]
        else:
            # A Python float, as the reference: 1 − 0.9 rounds to float32 0.1, not to float32(1) − float32(0.9).
            factor = float(self.momentum)
        new_mean = (1 - factor) * mean + factor * self.running_mean
        new_var = (1 - factor) * var + factor * self.running_var
        self.running_mean.copy_(torch.where(present[:, None], new_mean, self.running_mean))
        self.running_var.copy_(torch.where(present[:, None], new_var, self.running_var))
        if self.fill_empty:
            self._fill_absent(~present)
        if self.alias_last_epoch and int(self.epoch) > self.start_update:
            # The reference's `running_*_last_epoch = running_*` (from the first roll-over on) makes both names
            # one tensor, so the last-epoch statistics see this update too.
            self.running_mean_last_epoch.copy_(self.running_mean)
            self.running_var_last_epoch.copy_(self.running_var)
            self.refresh_calibration()

    def _fill_absent(self, absent: torch.Tensor) -> None:
        """STS-B's neighbour filling of the buckets absent from an update (see ``fill_empty``).

        A loop over the absent rows: each fill reads the row before it, which may have been filled one step
        earlier, so the rows cannot be computed at once (K ≤ 50 rows of (D,) each)."""
        k = self.num_buckets
        for stats in (self.running_mean, self.running_var):
            for row in torch.nonzero(absent).flatten().tolist():
                if row == 0:
                    stats[0] = stats[1]
                elif row == k - 1:
                    stats[row] = stats[row - 1]
                else:
                    stats[row] = (stats[row - 1] + stats[row + 1]) / 2

    @torch.no_grad()
    def refresh_calibration(self) -> None:
        """Rebuild the (K+1, D) calibration tables from the last-epoch buffers.

        Called by :meth:`update_last_epoch_stats` and after ``load_state_dict``; code that writes the
        last-epoch buffers directly must call it too.
        """
        v1, v2 = self._calibration_variances()
        # Age variant: a bucket whose variances sum to < 1e-10 is left alone; otherwise every dimension with
        # v1 ≠ 0 is calibrated.
        calibrate = (v1.sum(1, keepdim=True) >= 1e-10) & (v1 != 0)
        if self.skip_invalid_buckets:
            # The NYUD2/STS-B references' mask `(v1 > 0) + (v2 >= 0) == 2` is all-False on bool tensors: a bucket
            # with any invalid dimension is not calibrated at all.
            calibrate &= ((v1 > 0) & (v2 >= 0)).all(1, keepdim=True)
        ratio = (v2 / torch.where(calibrate, v1, torch.ones_like(v1))).clamp(self.clip_min, self.clip_max)
        self._set_tables(calibrate, torch.where(calibrate, ratio, torch.ones_like(v1)))

    def _calibration_variances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, D) bucket variances before and after smoothing, which the calibration maps between."""
        return self.running_var_last_epoch, self.smoothed_var_last_epoch

    def _set_tables(self, calibrate: torch.Tensor, factor: torch.Tensor) -> None:
        """The (K+1, D) tables from the calibrated entries (K, D) and their variance factors (1 elsewhere); row K
        is the identity."""
        m1, m2 = self.running_mean_last_epoch, self.smoothed_mean_last_epoch
        identity = torch.zeros(1, self.feature_dim, dtype=m1.dtype, device=m1.device)
        self._shift_from.copy_(torch.cat([torch.where(calibrate, m1, torch.zeros_like(m1)), identity]))
        self._scale.copy_(torch.cat([factor.sqrt(), identity + 1]))
        self._shift_to.copy_(torch.cat([torch.where(calibrate, m2, torch.zeros_like(m2)), identity]))

    @staticmethod
    def _as_input(flat: torch.Tensor, shape) -> torch.Tensor:
        """Per-pixel rows (B·H·W, C) back to the (B, C, H, W) ``shape`` of the input; vectors unchanged."""
        if len(shape) != 4:
            return flat
        batch, channels, height, width = shape
        return flat.reshape(batch, height, width, channels).permute(0, 3, 1, 2)

    def set_epoch(self, epoch: int) -> None:
        """The training epoch from here on (the trainer tells every module that has this method, once per
        epoch): calibration starts at ``start_smooth``."""
        self.current_epoch = int(epoch)

    def smooth(self, features, labels, epoch: int | None = None) -> torch.Tensor:
        """Calibrate features to the smoothed statistics of their buckets; a new tensor of the input's shape.

        features: (N, D) with labels (N,)/(N, 1), or (B, C, H, W) with labels (B, 1, H, W) (per pixel).
        Identity (the input itself is returned) before ``start_smooth``; ``epoch`` defaults to the one
        :meth:`set_epoch` told. Differentiable in ``features``: the gradient is the per-dimension scale.
        """
        epoch = self.current_epoch if epoch is None else epoch
        if epoch < self.start_smooth:
            return features
        shape = features.shape if isinstance(features, torch.Tensor) else None
        flat, labels = self._check("smooth", features, labels)
        rows = self.bucketize(labels.to(flat.device))
        tables = [t.to(flat.dtype).index_select(0, rows) for t in (self._shift_from, self._scale, self._shift_to)]
        return self._as_input((flat - tables[0]) * tables[1] + tables[2], shape)


def adapt_fds_state(state_dict: dict, model: nn.Module, log=print) -> dict:
    """A checkpoint's state dict made to fit ``model``'s FDS buffers, for the references' released checkpoints.

    The references name the module ``FDS`` (here ``fds``) and save no kernel window. FDS statistics only act in
    training, so they are kept where this model has an FDS buffer of the same shape and otherwise dropped with
    one log line (a model without ``--fds``, or other buckets); the model's own values fill what the checkpoint
    lacks. Keys outside FDS are returned unchanged, so a checkpoint that does not fit still fails loudly.
    """
    own = model.state_dict()
    fds_names = {name for name, module in model.named_modules() if isinstance(module, FDS)}
    out, dropped = {}, []
    for key, value in state_dict.items():
        parts = key.split(".")
        if "FDS" in parts[:-1]:
            key = ".".join("fds" if part == "FDS" else part for part in parts)
        prefix = key.rsplit(".", 1)[0]
        is_fds = prefix in fds_names or prefix.split(".")[-1] == "fds"
        if is_fds and (key not in own or own[key].shape != value.shape):
            dropped.append(key)
            continue
        out[key] = value
    for key, value in own.items():
        if key.rsplit(".", 1)[0] in fds_names and key not in out:
            out[key] = value
    if dropped:
        log(f"checkpoint FDS statistics not used by this model ({len(dropped)} tensors, e.g. {dropped[0]}): they "
            "only act in training; pass --fds with the checkpoint's --bucket_num/--bucket_start to keep them")
    return out


class FDSStatistics:
    """Per-bucket moments of one statistics pass, accumulated batch by batch (Chan et al.'s pairwise update of
    count, mean and sum of squared deviations, in float64), then folded into the FDS as
    :meth:`FDS.update_running_stats` would fold the whole pass at once."""

    def __init__(self, fds: FDS):
        self.fds = fds
        k, d = fds.num_buckets, fds.feature_dim
        device = fds.running_mean.device
        self.count = torch.zeros(k, dtype=torch.float64, device=device)
        self.mean = torch.zeros(k, d, dtype=torch.float64, device=device)
        self.squares = torch.zeros(k, d, dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, features, labels) -> None:
        """features: (N, D) or (B, C, H, W); labels: (N,), (N, 1) or (B, 1, H, W)."""
        count, mean, squares = self.fds._moments("statistics.add", features, labels)
        self._merge(count.double(), mean.double(), squares.double())

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Under torchrun: merge every process's moments (in rank order), so all hold the whole pass's."""
        from common import distributed
        if distributed.world_size() == 1:
            return
        parts = distributed.gather_objects((self.count.cpu(), self.mean.cpu(), self.squares.cpu()))
        device = self.count.device
        self.count = torch.zeros_like(self.count)
        self.mean, self.squares = torch.zeros_like(self.mean), torch.zeros_like(self.squares)
        for count, mean, squares in parts:
            self._merge(count.to(device), mean.to(device), squares.to(device))

    def _merge(self, count, mean, squares) -> None:
        total = self.count + count
        delta = mean - self.mean
        share = (count / total.clamp(min=1))[:, None]
        self.squares += squares + delta.square() * (self.count * share[:, 0])[:, None]
        self.mean += delta * share
        self.count = total

    @torch.no_grad()
    def commit(self, epoch: int) -> None:
        """The end of the pass: ``update_last_epoch_stats(epoch)``, then the accumulated update."""
        fds = self.fds
        fds.update_last_epoch_stats(epoch)
        if epoch < int(fds.epoch):
            return
        dtype = fds.running_mean.dtype
        var = self.squares / (self.count - 1).clamp(min=1)[:, None]
        fds._fold(self.count.to(dtype), self.mean.to(dtype), var.to(dtype), epoch)


#: How VIR's probabilistic smoothing summarises, smooths and calibrates a bucket (docs/methods.md §11.3).
VIR_SMOOTHINGS = ("authors", "mixture")


class ProbabilisticFDS(FDS):
    """VIR's probabilistic feature smoothing ("PRM"; Wang & Wang, NeurIPS 2023) over a latent (mean, variance).

    Each sample's latent is a distribution: mean ``z̄`` and per-dimension variance ``s`` (N, D), or per pixel
    (B, C, H, W); a sampled latent is ``z = z̄ + √s ε``. Per bucket b of n samples, with FDS's momentum and
    schedule, the statistics are kept as the authors' code computes them (``smoothing='authors'``, the default):

        m_b = mean z̄,   v_b = Σ(z̄ − m_b)²/n + (1 − 1/n) mean s,   w_b = Σ s / n²

    ``v_b`` is the expected biased variance of the bucket's sampled latents, ``w_b`` the variance of their mean.
    After each epoch ``m`` and the spread ``v`` are smoothed across buckets with the kernel k (as FDS), and only
    ``w`` with its square ``k²`` (the variance of a weighted sum of independent means is ``Σ k² w``). In training
    a latent is calibrated with ``f_b = clamp(ṽ_b / v_b, clip_min, clip_max)``:

        z̄ ← (z̄ − m_b) √f_b + m̃_b,      s ← (s + w_b) √f_b + w̃_b,

    the mean as FDS calibrates a feature and the variance as the authors' code does (the bucket-mean variance is
    added before the scaling and its smoothed value after). An unseen bucket starts at ``m = 0``, ``v = w = 1``,
    as theirs; until the first roll-over the calibration uses these starting statistics (f = 1, so ``z̄`` is
    unchanged and ``s ← s + 2``), as theirs does in its first smoothed epoch. A bucket whose spreads sum to
    < 1e-10 (a singleton bucket: v = 0) is left alone; in another, the dimensions of v = 0 are (FDS's age
    rule).

    ``smoothing='mixture'`` is this repo's earlier reading: ``u_b`` the unbiased variance of the latent means and
    ``s̄_b`` their mean latent variance, the mixture variance ``v_b = u_b + s̄_b``; both ``u`` and ``s̄`` smoothed
    with ``k²``; ``z̄`` calibrated as above and ``s ← s·f_b``; and the statistics pass reads the uncalibrated
    latent (:attr:`reads_calibrated`). Arguments as :class:`FDS` (``alias_last_epoch`` and ``fill_empty`` are
    not offered).

    Buffers: the :class:`FDS` ones hold ``m`` and ``v`` (``'mixture'``: ``u``); :attr:`latent`, an :class:`FDS`
    whose running mean holds ``w`` (``'mixture'``: ``s̄``), smooths with ``k²``.
    """

    def __init__(self, feature_dim, bucket_num=100, bucket_start=3, start_update=0, start_smooth=1,
                 kernel="gaussian", ks=5, sigma=2, momentum=0.9, clip_min=0.1, clip_max=10.0,
                 bins: LabelBins | None = None, edge_rule: str = "present", smoothing: str = "authors"):
        checks.check_choice("ProbabilisticFDS", "smoothing", smoothing, VIR_SMOOTHINGS)
        super().__init__(feature_dim, bucket_num, bucket_start, start_update, start_smooth, kernel, ks, sigma,
                         momentum, clip_min, clip_max, bins, edge_rule)
        self.smoothing = smoothing
        self.latent = FDS(feature_dim, bucket_num, bucket_start, start_update, start_smooth, kernel, ks, sigma,
                          momentum, clip_min, clip_max, bins, edge_rule)
        # The latent's statistic (w, or s̄) is smoothed with the squared window (not renormalised).
        self.latent.kernel_window.copy_(self.kernel_window.square())
        if smoothing == "authors":
            # The authors start every bucket's w at 1 (an unseen bucket keeps it, and it enters its neighbours'
            # smoothed w̃).
            for name in ("running_mean", "running_mean_last_epoch", "smoothed_mean_last_epoch"):
                getattr(self.latent, name).fill_(1.0)
        # The variance's calibration s ← (s − a) c + b, per bucket (row K: the identity).
        k = self.num_buckets
        self.register_buffer("_variance_shift_from", torch.zeros(k + 1, feature_dim), persistent=False)
        self.register_buffer("_variance_scale", torch.ones(k + 1, feature_dim), persistent=False)
        self.register_buffer("_variance_shift_to", torch.zeros(k + 1, feature_dim), persistent=False)
        # The tables of the starting statistics (a loaded state rebuilds them the same way): until the first
        # roll-over the authors calibrate with them, means unchanged and s ← (s + 1)·1 + 1 (the 'mixture'
        # start is the identity).
        self.refresh_calibration()

    @property
    def reads_calibrated(self) -> bool:
        """Whether the statistics pass reads the calibrated latent (the authors', as FDS's in-place write), or
        the uncalibrated one (``'mixture'``)."""
        return self.smoothing == "authors"

    def extra_repr(self):
        return super().extra_repr() + f", smoothing={self.smoothing!r}"

    @torch.no_grad()
    def update_last_epoch_stats(self, epoch: int) -> None:
        if epoch == int(self.epoch) + 1:
            self.latent.update_last_epoch_stats(epoch)      # first: the roll-over below rebuilds the tables from it
        super().update_last_epoch_stats(epoch)

    def _smooth_variances(self, stats: torch.Tensor) -> torch.Tensor:
        # The authors' spread v with the kernel itself; the earlier u with the squared window.
        if self.smoothing == "authors":
            return super()._smooth_variances(stats)
        return self.latent._smooth_across_buckets(stats)

    @torch.no_grad()
    def update_running_stats(self, features, labels, epoch: int, latent_var=None) -> None:
        """As :meth:`FDS.update_running_stats` for the latent means ``features`` and the latent variances
        ``latent_var`` (same shape; required), folded into the statistics of ``smoothing``."""
        if latent_var is None:
            raise ValueError("ProbabilisticFDS.update_running_stats: pass `latent_var`, the latent variances of "
                             "`features` (VIR's encoder outputs both).")
        if self.smoothing == "mixture":
            super().update_running_stats(features, labels, epoch)
            self.latent.update_running_stats(latent_var, labels, epoch)
            return
        if epoch < int(self.epoch):
            return
        counts, mean, squares = self._moments("update_running_stats", features, labels)
        _, latent_mean, _ = self.latent._moments("update_running_stats", latent_var, labels)
        self._fold_authors(counts, mean, squares, latent_mean, epoch)

    @torch.no_grad()
    def _fold_authors(self, counts, mean, squares, latent_mean, epoch: int) -> None:
        """Fold one pass's per-bucket counts (K,), means, squared deviations and mean latent variances (K, D) as
        the authors' statistics ``(m, v, w)``."""
        n = counts.clamp(min=1)[:, None]
        spread = squares / n + (1 - 1 / n) * latent_mean
        self._fold(counts, mean, spread, epoch)
        self.latent._fold(counts, latent_mean / n, torch.zeros_like(latent_mean), epoch)

    def _calibration_variances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The spreads before and after smoothing: ``(v, ṽ)``; ``'mixture'``: ``(u + s̄, ũ + s̃)`` (every entry
        > 0 there: s ≥ 10⁻⁶)."""
        if self.smoothing == "authors":
            return super()._calibration_variances()
        latent = self.latent
        return (self.running_var_last_epoch + latent.running_mean_last_epoch,
                self.smoothed_var_last_epoch + latent.smoothed_mean_last_epoch)

    def _set_tables(self, calibrate: torch.Tensor, factor: torch.Tensor) -> None:
        super()._set_tables(calibrate, factor)
        identity = factor.new_zeros(1, self.feature_dim)
        if self.smoothing == "authors":
            zeros = torch.zeros_like(factor)
            before, after = self.latent.running_mean_last_epoch, self.latent.smoothed_mean_last_epoch
            self._variance_shift_from.copy_(torch.cat([torch.where(calibrate, -before, zeros), identity]))
            self._variance_scale.copy_(torch.cat([factor.sqrt(), identity + 1]))
            self._variance_shift_to.copy_(torch.cat([torch.where(calibrate, after, zeros), identity]))
        else:
            self._variance_shift_from.zero_()
            self._variance_scale.copy_(torch.cat([factor, identity + 1]))
            self._variance_shift_to.zero_()

    def smooth(self, features, labels, epoch: int | None = None, latent_var=None):
        """The calibrated latent means (as :meth:`FDS.smooth`); with ``latent_var`` the pair ``(means,
        variances)``, the variances calibrated as ``smoothing`` says. Identity before ``start_smooth``."""
        epoch = self.current_epoch if epoch is None else epoch
        means = super().smooth(features, labels, epoch)
        if latent_var is None:
            return means
        if epoch < self.start_smooth:
            return means, latent_var
        flat, flat_labels = self._check("smooth", latent_var, labels)
        rows = self.bucketize(flat_labels.to(flat.device))
        tables = [t.to(flat.dtype).index_select(0, rows)
                  for t in (self._variance_shift_from, self._variance_scale, self._variance_shift_to)]
        return means, self._as_input((flat - tables[0]) * tables[1] + tables[2], latent_var.shape)

    def statistics(self) -> "ProbabilisticFDSStatistics":
        return ProbabilisticFDSStatistics(self)


class ProbabilisticFDSStatistics:
    """:class:`FDSStatistics` of the latent means and of the latent variances of one pass (``add(features,
    labels, latent_var)``), folded as the FDS's ``smoothing`` says."""

    def __init__(self, fds: ProbabilisticFDS):
        self.fds = fds
        self.means, self.variances = FDSStatistics(fds), FDSStatistics(fds.latent)

    def add(self, features, labels, latent_var=None) -> None:
        if latent_var is None:
            raise ValueError("ProbabilisticFDS.statistics().add: pass `latent_var` with the latent means.")
        self.means.add(features, labels)
        self.variances.add(latent_var, labels)

    def all_reduce(self) -> None:
        self.means.all_reduce()
        self.variances.all_reduce()

    @torch.no_grad()
    def commit(self, epoch: int) -> None:
        fds = self.fds
        if fds.smoothing == "mixture":
            self.means.commit(epoch)          # ProbabilisticFDS.update_last_epoch_stats rolls both over
            self.variances.commit(epoch)
            return
        fds.update_last_epoch_stats(epoch)
        if epoch < int(fds.epoch):
            return
        dtype = fds.running_mean.dtype
        means = self.means
        fds._fold_authors(means.count.to(dtype), means.mean.to(dtype), means.squares.to(dtype),
                          self.variances.mean.to(dtype), epoch)


#: the :class:`ProbabilisticFDS` keywords among a benchmark's FDS options (the reference switches are FDS's only).
_PROBABILISTIC_OPTIONS = ("clip_min", "clip_max", "bins", "edge_rule")


def fds_from_args(args, feature_dim: int, **options) -> FDS | None:
    """The FDS of parsed flags, None without ``--fds``: ``--bucket_num --bucket_start --start_update
    --start_smooth --fds_kernel --fds_ks --fds_sigma --fds_mmt`` and the benchmark's own ``options`` (clip bounds,
    label grid, edge rule and the reference switches it honours: ``alias_last_epoch``, ``skip_invalid_buckets``,
    ``fill_empty``). With ``--vir`` it is VIR's :class:`ProbabilisticFDS` (``--vir_smoothing``), which has none
    of those switches."""
    if not args.fds:
        return None
    grid = (feature_dim, args.bucket_num, args.bucket_start, args.start_update, args.start_smooth, args.fds_kernel,
            args.fds_ks, args.fds_sigma, args.fds_mmt)
    if getattr(args, "vir", False):
        return ProbabilisticFDS(*grid, **{k: v for k, v in options.items() if k in _PROBABILISTIC_OPTIONS},
                                smoothing=getattr(args, "vir_smoothing", None) or "authors")
    return FDS(*grid, **options)


# -- wiring ---------------------------------------------------------------------------------------------------
class FDSMethod(Method):
    """FDS (Yang et al., ICML 2021): the model's features calibrated to the smoothed statistics of their label's
    bucket (the benchmark builds it into its model with :func:`fds_from_args`; the statistics pass updates it)."""

    name = "fds"
    switch = "--fds"
    positive = ("fds_sigma",)
    non_negative = ("start_update", "start_smooth", "bucket_start")
    unit_interval = ("fds_mmt",)
    # SRL's surrogate follows --start_update and --fds_mmt; STS-B's label grid is --bucket_num bins.
    independent = ("start_update", "fds_mmt", "stats_from_training", "bucket_num", "bucket_start")
    model_flags = ("fds", "fds_kernel", "fds_ks", "fds_sigma", "start_update", "start_smooth", "bucket_num",
                   "bucket_start", "fds_mmt")

    def add_args(self, parser, *, fds_ks=5, fds_sigma=1.0, bucket_num=100, bucket_start=0,
                 stats_from_training=True) -> None:
        """``stats_from_training=False`` leaves that flag out (a benchmark that collects its statistics on a
        subset of its own, NYUD2)."""
        g = parser.add_argument_group("FDS (Yang et al., ICML 2021)")
        g.add_argument("--fds", action="store_true", help="feature distribution smoothing")
        g.add_argument("--fds_kernel", default="gaussian", choices=list(KERNELS))
        g.add_argument("--fds_ks", type=int, default=fds_ks, help="FDS kernel size (odd)")
        g.add_argument("--fds_sigma", type=float, default=fds_sigma)
        g.add_argument("--start_update", type=int, default=0, help="first epoch whose statistics are collected")
        g.add_argument("--start_smooth", type=int, default=1, help="first epoch that calibrates features")
        g.add_argument("--bucket_num", type=int, default=bucket_num, help="label bins tracked: up to this one")
        g.add_argument("--bucket_start", type=int, default=bucket_start, help="label bins tracked: from this one")
        g.add_argument("--fds_mmt", type=float, default=0.9, help="momentum of the running statistics")
        g.add_argument("--fds_alias_last_epoch", action="store_true",
                       help="reproduce the reference: the last-epoch statistics alias the running ones (one epoch "
                            "apart from the smoothed ones); off: copied (docs/reference-differences.md)")
        if stats_from_training:
            g.add_argument("--stats_from_training", action="store_true",
                           help="collect the FDS/SRL statistics from the features of the epoch's training batches "
                                "(a shortcut, not the references' protocol); off (default): from a second pass over "
                                "the training set after each epoch, as the references do")
        g.add_argument("--fds_skip_invalid_buckets", action="store_true",
                       help="reproduce the NYUD2/STS-B references: a bucket with any zero-variance dimension is not "
                            "calibrated at all; off: its valid dimensions are (docs/reference-differences.md)")

    def enabled(self, args) -> bool:
        return bool(flag(args, "fds"))

    def check(self, parser, args) -> None:
        if hasattr(args, "fds_ks") and (args.fds_ks < 1 or args.fds_ks % 2 == 0):
            parser.error(f"--fds_ks must be a positive odd kernel size, got {args.fds_ks}.")
        if hasattr(args, "bucket_num") and args.bucket_num - args.bucket_start < 2:
            parser.error("--bucket_num must exceed --bucket_start by at least 2.")

    def tag(self, args):
        return (f"fds_{args.fds_kernel[:3]}_{args.fds_ks}_{args.fds_sigma:g}_{args.start_update}_"
                f"{args.start_smooth}_{args.fds_mmt:g}")


METHOD = FDSMethod()
