"""Speed of the shared losses at realistic sizes, against the floor each one cannot beat.

    python benchmarks/losses.py [--device cpu|cuda] [--repeats 40]

Each row is the median wall time of one forward + backward (or one update) and its ratio to a floor:
ConR against L2-normalise + ``F·Fᵀ`` on the same features; FDS smooth and update against one elementwise
affine pass over the same tensor; RnC against its pairwise distance matrix and one log-sum-exp per row. The
reference's per-bucket Python loop for FDS smooth is timed as well, to show what the vectorised version
replaces, and so is RnC's direct, cubic statement (one masked log-sum-exp over the batch per positive).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from common.fds import FDS
from common.losses import bmc_loss, conr_loss, ranksim_loss, rnc_loss


def _timed(step, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_seconds(*steps, device, repeats, blocks=10, warmup=1):
    """Median time of each step. The steps run in alternating blocks (A…A B…B A…A …): drift of the machine
    hits them alike, while each block keeps the allocator and caches in the state its step leaves them."""
    times = [[] for _ in steps]
    per_block = max(1, repeats // blocks)
    for _ in range(blocks):
        for step, bucket in zip(steps, times):
            for _ in range(warmup):
                step()
            bucket.extend(_timed(step, device) for _ in range(per_block))
    medians = [statistics.median(t) for t in times]
    return medians if len(steps) > 1 else medians[0]


def forward_backward(fn, *leaves):
    def step():
        for leaf in leaves:
            leaf.grad = None
        fn().backward()
    return step


def looped_fds_smooth(fds, features, labels):
    """The reference's structure: one masked calibration per bucket present in the batch (for timing only)."""
    out = features.clone()
    rows = fds.bucketize(labels)
    for row in rows.unique().tolist():
        if row == fds.num_buckets:
            continue
        mask = rows == row
        m1, v1 = fds.running_mean_last_epoch[row], fds.running_var_last_epoch[row]
        m2, v2 = fds.smoothed_mean_last_epoch[row], fds.smoothed_var_last_epoch[row]
        out[mask] = (features[mask] - m1) * torch.sqrt((v2 / v1).clamp(0.1, 10)) + m2
    return out


@torch.no_grad()
def looped_fds_update(fds, features, labels):
    """The reference's structure: one masked mean/var per bucket present (for timing only; no state change)."""
    rows = fds.bucketize(labels)
    for row in rows.unique().tolist():
        if row == fds.num_buckets:
            continue
        group = features[rows == row]
        group.mean(0), group.var(0, unbiased=group.shape[0] > 1)


def looped_rnc(features, labels, temperature=2.0):
    """RnC as its formula reads, O(M³): for each positive column j of the off-diagonal table, one masked
    log-sum-exp over every anchor's row (for timing, and checked against :func:`rnc_loss`)."""
    m = features.shape[0]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=features.device)
    logits = (-torch.cdist(features, features) / temperature)[off_diagonal].view(m, m - 1)
    distance = (labels - labels.T).abs()[off_diagonal].view(m, m - 1)
    total = logits.new_zeros(())
    for j in range(m - 1):
        negatives = distance >= distance[:, j:j + 1]
        total = total + (logits[:, j] - torch.logsumexp(logits.masked_fill(~negatives, -torch.inf), 1)).sum()
    return -total / (m * (m - 1))


def rnc_floor(features):
    """What RnC cannot beat: the (M, M) distance matrix and one log-sum-exp pass over its rows."""
    return torch.logsumexp(-torch.cdist(features, features) / 2.0, dim=1).sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible; run with --device cpu.")
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    rows = []

    def record(name, seconds, floor_name=None, floor_seconds=None):
        ratio = f"{seconds / floor_seconds:.2f}×" if floor_seconds else ""
        rows.append((name, f"{seconds * 1e3:.2f}", floor_name or "", f"{floor_seconds * 1e3:.2f}" if floor_seconds
                     else "", ratio))

    # ConR: M = 512 (2 views of a batch of 256), D = 2048.
    feats = torch.randn(512, 2048, generator=gen).to(device).requires_grad_()
    ages = torch.randint(0, 100, (512, 1), generator=gen).float().to(device)
    preds = ages + 3 * torch.randn(512, 1, generator=gen).to(device)
    weights = torch.rand(512, 1, generator=gen).to(device) + 0.5
    floor, conr = median_seconds(
        forward_backward(lambda: (lambda z: z @ z.T)(F.normalize(feats, dim=1)).sum(), feats),
        forward_backward(lambda: conr_loss(feats, ages, preds, weights), feats), device=device, repeats=args.repeats)
    record("ConR (M=512, D=2048), fwd+bwd", conr, "normalise + F·Fᵀ", floor)

    # FDS smooth: B = 256, D = 2048, 97 buckets (AgeDB: ages 3..99).
    fds = FDS(2048, bucket_num=100, bucket_start=3).to(device)
    stats_feats = torch.randn(4000, 2048, generator=gen).to(device)
    stats_labels = torch.randint(0, 102, (4000,), generator=gen).float().to(device)
    fds.update_running_stats(stats_feats, stats_labels, 0)
    fds.update_last_epoch_stats(1)
    fds.update_running_stats(stats_feats * 1.1, stats_labels, 1)
    fds.update_last_epoch_stats(2)
    x = torch.randn(256, 2048, generator=gen).to(device).requires_grad_()
    labels = torch.randint(0, 102, (256,), generator=gen).float().to(device)
    a, b = torch.rand(2048, generator=gen).to(device), torch.randn(2048, generator=gen).to(device)
    floor, smooth, looped = median_seconds(
        forward_backward(lambda: (x * a + b).sum(), x), forward_backward(lambda: fds.smooth(x, labels, 5).sum(), x),
        forward_backward(lambda: looped_fds_smooth(fds, x, labels).sum(), x), device=device, repeats=args.repeats)
    record("FDS smooth (B=256, D=2048, 97 buckets), fwd+bwd", smooth, "x·a + b", floor)
    record("  reference-style loop over buckets, fwd+bwd", looped, "x·a + b", floor)

    # FDS update: 4000 × 2048 features of one statistics pass.
    big_a = torch.rand(2048, generator=gen).to(device)
    out = torch.empty_like(stats_feats)   # written in place: a fresh 32 MB block costs page faults, not work
    floor, update, looped_update = median_seconds(
        lambda: torch.addcmul(big_a, stats_feats, big_a, out=out), lambda: fds.update_running_stats(stats_feats, stats_labels, 5),
        lambda: looped_fds_update(fds, stats_feats, stats_labels), device=device, repeats=args.repeats)
    record("FDS update_running_stats (4000×2048)", update, "x·a + b, in place", floor)
    record("  reference-style loop over buckets", looped_update, "x·a + b, in place", floor)

    # RankSim: B = 256, D = 2048 (64 distinct ages, so the one-per-label subsampling runs).
    rfeats = torch.randn(256, 2048, generator=gen).to(device).requires_grad_()
    rlabels = torch.randint(20, 84, (256, 1), generator=gen).float().to(device)
    rank_gen = torch.Generator(device=device).manual_seed(0)
    kept = torch.randn(64, 2048, generator=gen).to(device).requires_grad_()   # one row per distinct label
    floor, ranksim = median_seconds(
        forward_backward(lambda: (lambda z: z @ z.T)(F.normalize(kept, dim=1)).sum(), kept),
        forward_backward(lambda: ranksim_loss(rfeats, rlabels, 2.0, rank_gen), rfeats), device=device,
        repeats=args.repeats)
    record("RankSim (B=256, D=2048, 64 labels), fwd+bwd", ranksim, "normalise + F·Fᵀ (64 rows)", floor)

    # BMC: N = 256 predictions.
    bpred = torch.randn(256, 1, generator=gen).to(device).requires_grad_()
    btarget = torch.randn(256, 1, generator=gen).to(device)
    sigma = torch.tensor(1.0, device=device, requires_grad=True)
    bmc = median_seconds(forward_backward(lambda: bmc_loss(bpred, btarget, sigma ** 2), bpred, sigma),
                         device=device, repeats=args.repeats)
    record("BMC (N=256), fwd+bwd", bmc)

    # RnC: M = 512 (2 views of a batch of 256), D = 2048; ages 0..99, so label-distance ties abound.
    for m, dim, with_loop in ((512, 2048, False), (128, 512, True)):
        rfeat = torch.randn(m, dim, generator=gen).to(device).requires_grad_()
        rage = torch.randint(0, 100, (m, 1), generator=gen).float().to(device)
        steps = [forward_backward(lambda: rnc_floor(rfeat), rfeat),
                 forward_backward(lambda: rnc_loss(rfeat, rage), rfeat)]
        if with_loop:
            torch.testing.assert_close(looped_rnc(rfeat, rage), rnc_loss(rfeat, rage), rtol=1e-4, atol=1e-5)
            steps.append(forward_backward(lambda: looped_rnc(rfeat, rage), rfeat))
        floor, *timed = median_seconds(*steps, device=device, repeats=args.repeats)
        record(f"RnC (M={m}, D={dim}), fwd+bwd", timed[0], "distances + row log-sum-exp", floor)
        if with_loop:
            record(f"  direct loop over positives (M={m}), fwd+bwd", timed[1], "distances + row log-sum-exp",
                   floor)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {args.device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print("| operation | ms | floor | floor ms | ratio |")
    print("|---|---:|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
