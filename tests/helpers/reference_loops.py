

# ---------------------------------------------------------------------------------------------------------
# Slow reference loops for Balanced MSE, SRL, LDS, FDS and the shot metrics.
# Written from docs/methods.md (§2, §3, §5, §7, §10) with explicit Python loops in float64; the tests compare
# the vectorised functions of `common` against them. Nothing here is taken from another code base.
# ---------------------------------------------------------------------------------------------------------
import math as _bl_math

import numpy as _bl_np
import torch as _bl_torch


# ---- kernel windows (§2.4) and LDS re-weighting (§2.1) ----------------------------------------------------

def lds_kernel_window_loop(kernel, ks, sigma, normalise="max"):
    """Kernel window of §2.4 as a list of float64 numbers (max- or sum-normalised)."""
    h = (ks - 1) // 2
    if kernel == "gaussian":
        # 1-D Gaussian filter (truncate 4, radius int(4σ + 0.5)) applied to a length-ks delta with
        # half-sample-symmetric ("reflect") extension: mass beyond the ends folds back in.
        radius = int(4.0 * sigma + 0.5)
        taps = [_bl_math.exp(-0.5 * (j / sigma) ** 2) for j in range(-radius, radius + 1)]
        total = sum(taps)
        taps = [t / total for t in taps]
        delta = [0.0] * ks
        delta[h] = 1.0
        window = []
        for i in range(ks):
            acc = 0.0
            for t, j in zip(taps, range(-radius, radius + 1)):
                k = (i + j) % (2 * ks)
                if k >= ks:
                    k = 2 * ks - 1 - k
                acc += t * delta[k]
            window.append(acc)
    elif kernel == "triang":
        window = [1.0 - abs(i - h) / (h + 1.0) for i in range(ks)]
    elif kernel == "laplace":
        window = [_bl_math.exp(-abs(x) / sigma) / (2.0 * sigma) for x in range(-h, h + 1)]
    else:
        raise KeyError(kernel)
    norm = max(window) if normalise == "max" else sum(window)
    return [w / norm for w in window]


def lds_prepare_weights_loop(labels, reweight, lds=False, kernel="gaussian", ks=5, sigma=2.0,
                             max_target=121, truncate=False):
    """Per-sample weights of the age pipeline (§2.1); None for reweight='none'."""
    if reweight == "none":
        return None
    counts = [0] * max_target
    for y in labels:
        counts[min(max_target - 1, int(y))] += 1
    if reweight == "sqrt_inv":
        eff = [_bl_math.sqrt(c) for c in counts]
    else:  # inverse: clip to [5, 1000] before any smoothing
        eff = [float(min(max(c, 5), 1000)) for c in counts]
    if lds:
        win = lds_kernel_window_loop(kernel, ks, sigma, "max")
        h = (ks - 1) // 2
        smoothed = []
        for b in range(max_target):
            acc = 0.0
            for j in range(ks):
                src = b - (j - h)  # convolution, zero outside the bins
                if 0 <= src < max_target:
                    acc += win[j] * eff[src]
            smoothed.append(acc)
        if reweight == "inverse" and truncate:
            smoothed = [float(int(v)) for v in smoothed]
        eff = smoothed
    raw = [_bl_np.float32(1.0 / eff[min(max_target - 1, int(y))]) for y in labels]
    scale = len(raw) / sum(float(w) for w in raw)
    return _bl_np.array([scale * float(w) for w in raw], dtype=_bl_np.float64)


# ---- FDS (§3.2 – §3.5, age variant) ------------------------------------------------------------------------

def fds_groups_loop(labels, bucket_start, bucket_num):
    """Row -> list of sample indices under the age bucketing rule of §3.2 (integer-valued labels)."""
    labels = [float(y) for y in labels]
    groups = {}
    for u in sorted(set(labels)):
        if u < bucket_start or u > bucket_num - 1:
            continue
        if u == bucket_start:
            idx = [i for i, y in enumerate(labels) if y <= u]
        elif u == bucket_num - 1:
            idx = [i for i, y in enumerate(labels) if y >= u]
        else:
            idx = [i for i, y in enumerate(labels) if y == u]
        groups[int(u - bucket_start)] = idx
    return groups


def fds_update_running_stats_loop(running_mean, running_var, tracked, features, labels, epoch, *,
                                  start_update, momentum, bucket_start, bucket_num):
    """Returns updated copies (lists of lists / list) of the running statistics (§3.3)."""
    mean = [list(map(float, r)) for r in running_mean]
    var = [list(map(float, r)) for r in running_var]
    tracked = [float(t) for t in tracked]
    feats = [list(map(float, r)) for r in features]
    dim = len(mean[0])
    for row, idx in fds_groups_loop(labels, bucket_start, bucket_num).items():
        n = len(idx)
        mu = [sum(feats[i][d] for i in idx) / n for d in range(dim)]
        if n > 1:
            v = [sum((feats[i][d] - mu[d]) ** 2 for i in idx) / (n - 1) for d in range(dim)]
        else:
            v = [0.0] * dim
        tracked[row] += n
        if epoch == start_update:
            f = 0.0
        elif momentum is None:
            f = 1.0 - n / tracked[row]
        else:
            f = momentum
        for d in range(dim):
            mean[row][d] = (1 - f) * mu[d] + f * mean[row][d]
            var[row][d] = (1 - f) * v[d] + f * var[row][d]
    return mean, var, tracked


def fds_smooth_stats_loop(stat, window):
    """Convolution along the bucket axis with PyTorch-style reflect padding (edge not repeated)."""
    K, dim = len(stat), len(stat[0])
    h = (len(window) - 1) // 2
    out = []
    for k in range(K):
        row = []
        for d in range(dim):
            acc = 0.0
            for j, w in enumerate(window):
                src = k + j - h
                if src < 0:
                    src = -src
                elif src >= K:
                    src = 2 * (K - 1) - src
                acc += w * float(stat[src][d])
            row.append(acc)
        out.append(row)
    return out


def fds_calibrate_loop(x, m1, v1, m2, v2, clip_min=0.1, clip_max=10.0):
    """Age calibrate_mean_var (§3.5) on one feature vector."""
    x = [float(a) for a in x]
    if sum(float(a) for a in v1) < 1e-10:
        return x
    out = list(x)
    for d in range(len(x)):
        if float(v1[d]) != 0.0:
            factor = min(max(float(v2[d]) / float(v1[d]), clip_min), clip_max)
            out[d] = (x[d] - float(m1[d])) * _bl_math.sqrt(factor) + float(m2[d])
    return out


def fds_smooth_loop(features, labels, m1, v1, m2, v2, *, bucket_start, bucket_num):
    """smooth() of §3.5 for epoch >= start_smooth: calibrated copy of the features (list of lists)."""
    out = [list(map(float, r)) for r in features]
    for row, idx in fds_groups_loop(labels, bucket_start, bucket_num).items():
        for i in idx:
            out[i] = fds_calibrate_loop(features[i], m1[row], v1[row], m2[row], v2[row])
    return out


# ---- Balanced MSE (§5.1); torch scalars so that autograd can differentiate the loops --------------------

def _bmse_lse(terms):
    m = max(float(t.detach()) if isinstance(t, _bl_torch.Tensor) else float(t) for t in terms)
    return m + _bl_torch.log(sum(_bl_torch.exp(t - m) for t in terms))


def bmse_bmc_nll_loop(pred, target, var):
    """Mean per-sample NLL of BMC (without the (2σ²)_sg factor)."""
    n = pred.shape[0]
    total = 0.0
    for i in range(n):
        logits = [-(pred[i, 0] - target[j, 0]) ** 2 / (2 * var) for j in range(n)]
        total = total + (_bmse_lse(logits) - logits[i])
    return total / n


def bmse_gai_nll_loop(pred, target, means, weights, variances, var):
    """Mean per-sample NLL of GAI; means/weights/variances are flat sequences of length K."""
    n = pred.shape[0]
    total = 0.0
    for i in range(n):
        terms = []
        for k in range(len(weights)):
            s = variances[k] + var
            terms.append(_bl_math.log(weights[k]) - 0.5 * _bl_torch.log(s) - (pred[i, 0] - means[k]) ** 2 / (2 * s))
        total = total + (pred[i, 0] - target[i, 0]) ** 2 / (2 * var) + 0.5 * _bl_torch.log(var) + _bmse_lse(terms)
    return total / n


def bmse_bni_nll_loop(pred, target, centers, probs, var):
    """Mean per-sample NLL of BNI; centers/probs are flat sequences of length B."""
    n = pred.shape[0]
    total = 0.0
    for i in range(n):
        terms = [_bl_math.log(probs[b]) - (pred[i, 0] - centers[b]) ** 2 / (2 * var) for b in range(len(probs))]
        total = total + (pred[i, 0] - target[i, 0]) ** 2 / (2 * var) + _bmse_lse(terms)
    return total / n


# ---- SRL (§7.2); torch scalars/vectors so that autograd can differentiate the loops ----------------------

def _srl_unit(v):
    # v / max(‖v‖, 1e-12), differentiable through the norm
    return v / _bl_torch.clamp(_bl_torch.sqrt((v * v).sum()), min=1e-12)


def srl_centroid_table_loop(features, labels, surrogate):
    """Row-normalised table C of §7.2 steps 1-3 as a list of L vectors."""
    n, L = features.shape[0], surrogate.shape[0]
    u = [_srl_unit(features[i]) for i in range(n)]
    table = []
    for c in range(L):
        members = [u[i] for i in range(n) if int(labels[i]) == c]
        row = sum(members) / len(members) if members else _bl_torch.zeros_like(surrogate[c])
        if float(row.detach().sum()) == 0.0:
            row = surrogate[c].detach()
        table.append(_srl_unit(row) if float((row.detach() ** 2).sum()) > 0 else row)
    return u, table


def srl_losses_loop(features, labels, surrogate, points, temperature=0.3, alpha=-1.0, beta=0.1):
    """(L_con, L_env, L_hom) of §7.2 written with loops."""
    n, L = features.shape[0], surrogate.shape[0]
    u, C = srl_centroid_table_loop(features, labels, surrogate)
    con = 0.0
    for i in range(n):
        logits = [(u[i] * C[c].detach()).sum() / temperature for c in range(L)]
        con = con + (_bmse_lse(logits) - logits[int(labels[i])])
    con = con / n
    env = 0.0
    for k in range(points.shape[0]):
        p = _srl_unit(points[k])
        cosines = [(C[c] * p).sum() for c in range(L)]
        best = max(range(L), key=lambda c: float(cosines[c].detach()))
        env = env + cosines[best]
    env = 1.0 - env / points.shape[0]
    a = [(C[c] * C[c + 1]).sum() for c in range(L - 1)]
    mean_a = sum(a) / len(a)
    var_a = sum((x - mean_a) ** 2 for x in a) / (len(a) - 1)
    hom = alpha * sum(a) + beta * var_a
    return con, env, hom


# ---- shot metrics (§10.1) ---------------------------------------------------------------------------------

def metrics_gmean_loop(errors):
    if len(errors) == 0:
        return float("nan")
    if any(e == 0 for e in errors):
        return 0.0
    return _bl_math.exp(sum(_bl_math.log(e) for e in errors) / len(errors))


def metrics_shot_loop(preds, labels, train_labels, many_shot_thr=100, low_shot_thr=20):
    train_int = [int(t) for t in train_labels]
    groups = {"all": [], "many": [], "medium": [], "few": []}
    for p, y in zip(preds, labels):
        count = sum(1 for t in train_int if t == float(y))
        shot = "many" if count > many_shot_thr else ("few" if count < low_shot_thr else "medium")
        err = float(p) - float(y)
        groups["all"].append(err)
        groups[shot].append(err)
    out = {}
    for name, errs in groups.items():
        n = len(errs)
        out[name] = {
            "mse": sum(e * e for e in errs) / n if n else float("nan"),
            "l1": sum(abs(e) for e in errs) / n if n else float("nan"),
            "gmean": metrics_gmean_loop([abs(e) for e in errs]),
            "count": n,
        }
    return out


# ---------------------------------------------------------------------------
# Slow loop references for the regression losses, ConR and RankSim.
# Written from docs/methods.md (§1, §4, §6): explicit Python loops,
# float64 arithmetic, nothing vectorised.
# ---------------------------------------------------------------------------
import math as _regression_math

import torch as _regression_torch


def regression_elementwise(name, e, activate="sigmoid", beta=None, gamma=1):
    """Per-element loss of §1.1 for one error value e = pred - target (a Python float)."""
    a = abs(e)
    if name == "mse":
        return a * a
    if name == "l1":
        return a
    if name in ("focal_mse", "focal_l1"):
        b = 0.2 if beta is None else beta
        if activate == "tanh":
            g = _regression_math.tanh(b * a) ** gamma
        else:
            g = (2.0 / (1.0 + _regression_math.exp(-b * a)) - 1.0) ** gamma
        base = a * a if name == "focal_mse" else a
        return base * g
    if name == "huber":
        b = 1.0 if beta is None else beta
        if a < b:
            return 0.5 * a * a / b
        return a - 0.5 * b
    raise KeyError(name)


def regression_loop(name, pred, target, weights=None, **kw):
    """mean over all elements of w * loss; weights None, same shape, or per-sample (N,) for (N,1)."""
    p = pred.detach().double().reshape(pred.shape[0], -1) if pred.dim() > 0 else pred.detach().double().reshape(1, 1)
    t = target.detach().double().reshape(p.shape)
    n_rows, n_cols = p.shape
    if weights is None:
        w = [[1.0] * n_cols for _ in range(n_rows)]
    else:
        wt = weights.detach().double()
        if wt.numel() == n_rows and n_cols == 1:
            flat = wt.reshape(-1).tolist()
            w = [[flat[r]] for r in range(n_rows)]
        else:
            w = wt.reshape(n_rows, n_cols).tolist()
    pl, tl = p.tolist(), t.tolist()
    total = 0.0
    count = 0
    for r in range(n_rows):
        for c in range(n_cols):
            total += w[r][c] * regression_elementwise(name, pl[r][c] - tl[r][c], **kw)
            count += 1
    return total / count


def _conr_rows(x, m):
    x = x.detach().double()
    if x.dim() == 1:
        x = x.reshape(m, 1)
    return x.reshape(m, -1).tolist()


def _conr_dist(u, v):
    return _regression_math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def _conr_anchor_weights(weights, m):
    if weights is None:
        return [1.0] * m
    if isinstance(weights, (int, float)):
        return [float(weights)] * m
    w = weights.detach().double().reshape(-1).tolist()
    if len(w) == 1:
        return w * m
    return w


def _conr_anchor_sets(i, y, yh, window, dist):
    """Anchor ``i``'s positives (other rows whose label is within ``window``) and negatives ``(j, label
    distance)`` (label beyond ``window`` but prediction within it), one pair at a time."""
    pos, neg = [], []
    for j in range(len(y)):
        lab = dist(y[i], y[j])
        if j != i and lab <= window:
            pos.append(j)
        if lab > window and dist(yh[i], yh[j]) <= window:
            neg.append((j, lab))
    return pos, neg


def _conr_similarities(z, i, pos, neg, temperature):
    """{j: <z_i, z_j> / τ} over anchor ``i``'s positives and negatives, summed coordinate by coordinate."""
    return {j: sum(a * b for a, b in zip(z[i], z[j])) / temperature for j in set(pos) | {j for j, _ in neg}}


def conr_loop(features, targets, preds, weights=None, window=1.0, temperature=0.07,
              eta=0.01, denominator="reference"):
    """Age ConR (§4.1) with the repo's fix: anchors without positives are skipped.

    Built from torch scalars so that autograd gives the gradient w.r.t. ``features``.
    """
    f = features.double()
    m, d = f.shape
    y = _conr_rows(targets, m)
    yh = _conr_rows(preds, m)
    om = _conr_anchor_weights(weights, m)
    z = []
    for i in range(m):
        norm = _regression_torch.sqrt(sum(f[i, k] * f[i, k] for k in range(d)))
        norm = _regression_torch.clamp(norm, min=1e-12)
        z.append([f[i, k] / norm for k in range(d)])
    total = f.sum() * 0.0
    for i in range(m):
        pos, neg = _conr_anchor_sets(i, y, yh, window, _conr_dist)
        if not pos or not neg:
            continue
        sim = _conr_similarities(z, i, pos, neg, temperature)
        den = sum(_regression_torch.exp(sim[j]) for j in pos)
        if denominator == "reference":
            den = den + (m - len(pos))
        for j, lab in neg:
            den = den + om[i] * _regression_math.exp(eta * lab) * _regression_torch.exp(sim[j])
        log_den = _regression_torch.log(den)
        ell = sum(log_den - sim[j] for j in pos) / len(pos)
        total = total + om[i] * ell
    return total / m


def conr_dense_loop(features, depth, output, weights=None, window=0.2, temperature=0.2,
                    eta=0.2, denominator="reference"):
    """Depth ConR (§4.2): per-image pooling, linear pushing weight, |P|+1 normaliser, no anchor weight."""
    f = features.double()
    b = f.shape[0]
    flat = [f[i].reshape(-1) for i in range(b)]
    dim = flat[0].shape[0]
    z = []
    for i in range(b):
        norm = _regression_torch.clamp(_regression_torch.sqrt(sum(flat[i][k] * flat[i][k] for k in range(dim))), min=1e-12)
        z.append([flat[i][k] / norm for k in range(dim)])

    def pooled(t):
        out = []
        for i in range(b):
            vals = t[i].detach().double().reshape(-1).tolist()
            out.append(sum(vals) / len(vals))
        return out

    y = pooled(depth)
    yh = pooled(output)
    om = [1.0] * b if weights is None else pooled(weights)
    total = f.sum() * 0.0
    for i in range(b):
        pos, neg = _conr_anchor_sets(i, y, yh, window, lambda u, v: abs(u - v))
        if not pos or not neg:
            continue
        sim = _conr_similarities(z, i, pos, neg, temperature)
        den = sum(_regression_torch.exp(sim[j]) for j in pos)
        if denominator == "reference":
            den = den + (b - len(pos))
        for j, lab in neg:
            den = den + eta * lab * om[i] * _regression_torch.exp(sim[j])
        log_den = _regression_torch.log(den)
        ell = sum(log_den - sim[j] for j in pos) / (len(pos) + 1)
        total = total + ell
    return total / b


def ranksim_rank_loop(row):
    """0-based descending rank of a list; ties: the higher index gets the smaller rank."""
    n = len(row)
    ranks = []
    for i in range(n):
        r = 0
        for j in range(n):
            if row[j] > row[i] or (row[j] == row[i] and j > i):
                r += 1
        ranks.append(r)
    return ranks


def ranksim_rank_normalised_loop(row):
    n = len(row)
    return [(r + 1) / n for r in ranksim_rank_loop(row)]


def ranksim_loop(features, targets, interpolation_lambda=2.0, keep=None, tie_decimals=None):
    """RankSim (§6.2) on the rows ``keep`` (default: all rows, which must have unique labels).

    Returns (loss as a Python float, gradient w.r.t. ``features`` as a float64 tensor), the gradient
    obtained by the blackbox rule of §6.1 applied row by row, then back-propagated through the
    cosine-similarity matrix with autograd. ``tie_decimals``: if given, similarities and perturbed
    similarities are rounded to that many decimals before ranking, so that values equal in exact
    arithmetic (but split by float rounding) are ranked as ties by the tie rule.
    """
    ylist = targets.detach().double().reshape(-1).tolist()
    b = len(ylist)
    if keep is None:
        if len(set(ylist)) != b:
            raise ValueError("duplicate labels: pass keep")
        keep = list(range(b))
    x = features.detach().double().reshape(b, -1).clone().requires_grad_(True)
    n = len(keep)
    d = x.shape[1]
    z = []
    for i in keep:
        norm = _regression_torch.clamp(_regression_torch.sqrt(sum(x[i, k] * x[i, k] for k in range(d))), min=1e-12)
        z.append([x[i, k] / norm for k in range(d)])
    sims = [[sum(z[a][k] * z[c][k] for k in range(d)) for c in range(n)] for a in range(n)]
    yk = [ylist[i] for i in keep]
    lam = interpolation_lambda
    loss = 0.0
    grad_s = [[0.0] * n for _ in range(n)]
    for a in range(n):
        s_row = [float(v.detach()) for v in sims[a]]

        def snap(vals):
            return vals if tie_decimals is None else [round(v, tie_decimals) for v in vals]

        ry = ranksim_rank_normalised_loop([-abs(yk[a] - yk[c]) for c in range(n)])
        rf = ranksim_rank_normalised_loop(snap(s_row))
        loss += sum((rf[c] - ry[c]) ** 2 for c in range(n)) / n
        g = [2.0 * (rf[c] - ry[c]) / n for c in range(n)]
        rf2 = ranksim_rank_normalised_loop(snap([s_row[c] + lam * g[c] for c in range(n)]))
        for c in range(n):
            grad_s[a][c] = -(rf[c] - rf2[c]) / (lam + 1e-8)
    s_all = _regression_torch.stack([_regression_torch.stack(r) for r in sims])
    (gx,) = _regression_torch.autograd.grad(
        s_all, x, grad_outputs=_regression_torch.tensor(grad_s, dtype=_regression_torch.float64),
        allow_unused=True)
    if gx is None:
        gx = _regression_torch.zeros_like(x)
    return loss, gx.detach()


# ---------------------------------------------------------------------------------------------------------
# Slow loop references for RnC, UVOTE and VIR, written from the papers' formulas (common/losses/rnc.py,
# uvote.py, vir.py docstrings): explicit Python loops over samples, pairs and heads in float64 torch scalars
# (so autograd differentiates them); nothing vectorised, nothing taken from another code base.
# ---------------------------------------------------------------------------------------------------------
import math as _dir3_math

import torch as _dir3_torch


def rnc_loop(features, labels, temperature=2.0, feature_sim="l2"):
    """Rank-N-Contrast, O(M³): for every anchor i and positive j ≠ i, the negatives are every k ≠ i with
    Σ|y_i − y_k| ≥ Σ|y_i − y_j|. ``features`` (M, D) rows; ``labels`` (M,), (M, 1) or (M, K)."""
    f = features.double()
    m, d = f.shape
    y = labels.detach().double().reshape(m, -1).tolist()

    def label_distance(a, b):
        return sum(abs(p - q) for p, q in zip(y[a], y[b]))

    def similarity(a, b):
        if feature_sim == "l2":
            squared = sum((f[a, c] - f[b, c]) ** 2 for c in range(d))
            # At distance 0 (duplicated rows) the norm takes the subgradient 0, as torch's norms do.
            distance = _dir3_torch.sqrt(squared) if float(squared.detach()) > 0 else squared * 0.0
            return -distance / temperature
        norm_a = _dir3_torch.sqrt(sum(f[a, c] ** 2 for c in range(d)))
        norm_b = _dir3_torch.sqrt(sum(f[b, c] ** 2 for c in range(d)))
        return sum(f[a, c] * f[b, c] for c in range(d)) / (norm_a * norm_b) / temperature

    s = [[similarity(a, b) if a != b else None for b in range(m)] for a in range(m)]
    total = f.sum() * 0.0
    for i in range(m):
        for j in range(m):
            if j == i:
                continue
            negatives = [k for k in range(m) if k != i and label_distance(i, k) >= label_distance(i, j)]
            # log Σ exp(s_ik), shifted by the largest logit so that small temperatures do not underflow
            top = max(float(s[i][k].detach()) for k in negatives)
            denominator = 0.0
            for k in negatives:
                denominator = denominator + _dir3_torch.exp(s[i][k] - top)
            total = total - (s[i][j] - top - _dir3_torch.log(denominator))
    return total / (m * (m - 1))


def uvote_exponents_loop(num_heads):
    return [0.0] if num_heads == 1 else [i / (num_heads - 1) for i in range(num_heads)]


def uvote_head_weights_loop(train_labels, labels, num_heads, num_bins=121, lds=False, kernel="gaussian", ks=5,
                            sigma=2.0, clip=(5, 1000)):
    """(N, M) list of lists: head i weights bin counts n^(−r_i) (clipped for r ≥ 1, none for r = 0), optional
    LDS on the powered counts (zero outside the grid), mean 1 over the training labels; integer bins."""
    def bin_of(y):
        return min(num_bins - 1, max(0, int(_dir3_math.floor(y))))

    counts = [0] * num_bins
    for y in train_labels:
        counts[bin_of(y)] += 1
    window = lds_kernel_window_loop(kernel, ks, sigma, "max") if lds else None
    half = (ks - 1) // 2
    out = [[0.0] * num_heads for _ in labels]
    for head, r in enumerate(uvote_exponents_loop(num_heads)):
        if r == 0:
            for n in range(len(labels)):
                out[n][head] = 1.0
            continue
        base = [float(min(max(c, clip[0]), clip[1])) if r >= 1 else float(c) for c in counts]
        powered = [b ** r for b in base]
        if lds:
            smoothed = []
            for b in range(num_bins):
                acc = 0.0
                for j in range(ks):
                    src = b - (j - half)
                    if 0 <= src < num_bins:
                        acc += window[j] * powered[src]
                smoothed.append(acc)
            powered = smoothed
        scale = len(train_labels) / sum(1.0 / powered[bin_of(y)] for y in train_labels)
        for n, y in enumerate(labels):
            out[n][head] = scale / powered[bin_of(y)]
    return out


def uvote_loop(mus, log_sigmas, target, head_weights=None, epoch=None, epochs=None, dynamic=False):
    """UVOTE: per head i, mean_n w_ni (log 2σ + |y − μ|/σ) with log σ clamped to [−5, 5]; Σ_i, or
    L_0 + (e/E)² Σ_{i>0} with the dynamic schedule."""
    n, m = mus.shape
    y = target.reshape(-1)
    heads = []
    for i in range(m):
        total = mus.sum() * 0.0
        for k in range(n):
            s = _dir3_torch.clamp(log_sigmas[k, i], -5.0, 5.0)
            term = _dir3_math.log(2.0) + s + _dir3_torch.abs(y[k] - mus[k, i]) / _dir3_torch.exp(s)
            w = 1.0 if head_weights is None else head_weights[k, i]
            total = total + w * term
        heads.append(total / n)
    if not dynamic:
        return sum(heads[1:], heads[0])
    factor = 1.0 - (1.0 - (epoch / epochs) ** 2)
    return heads[0] + factor * sum(heads[1:], heads[0] * 0.0)


def uvote_predict_loop(mus, log_sigmas, rule="minvar", vote="raw"):
    """Per sample, from the statements of docs/methods.md §11.2.

    ``vote='raw'`` (the authors' code): on the raw log σ (no clamp): ``minvar`` the head of least log σ (first on
    ties), its σ; ``avg`` the mean location and σ = exp(mean log σ); ``avgvar`` weights 1/σ normalised, the
    weighted mean location and σ = exp(weighted mean log σ).
    ``vote='clamped'`` (the earlier vote): σ = exp(clamp(log σ, −5, 5)); the head of least σ, the mean, or the
    σ⁻²-weighted mean; the scale combined with the same weights.
    """
    n, m = mus.shape
    preds, scales = [], []
    for k in range(n):
        logs = [float(log_sigmas[k, i]) for i in range(m)]
        if vote == "clamped":
            logs = [min(max(v, -5.0), 5.0) for v in logs]
        sig = [_dir3_math.exp(v) for v in logs]
        mu = [float(mus[k, i]) for i in range(m)]
        if rule == "minvar":
            best = 0
            for i in range(1, m):
                if logs[i] < logs[best]:
                    best = i
            coef = [1.0 if i == best else 0.0 for i in range(m)]
        elif rule == "avg":
            coef = [1.0 / m] * m
        else:
            inv = [1.0 / (s * s) if vote == "clamped" else 1.0 / s for s in sig]
            coef = [v / sum(inv) for v in inv]
        preds.append(sum(c * u for c, u in zip(coef, mu)))
        if vote == "clamped":
            scales.append(sum(c * s for c, s in zip(coef, sig)))
        else:
            scales.append(_dir3_math.exp(sum(c * v for c, v in zip(coef, logs))))
    return preds, scales


def vir_loop(gamma, nu, alpha, beta, target, weights=None, reg_weight=0.01):
    """VIR's NIG loss: mean_n w_n (NIG NLL + λ |y − γ|(2ν + α)), sample by sample."""
    n = gamma.shape[0]
    total = gamma.sum() * 0.0
    for k in range(n):
        g, v, a, b, y = gamma[k], nu[k], alpha[k], beta[k], target[k]
        omega = 2.0 * b * (1.0 + v)
        nll = (0.5 * _dir3_torch.log(_dir3_math.pi / v) - a * _dir3_torch.log(omega)
               + (a + 0.5) * _dir3_torch.log((y - g) ** 2 * v + omega)
               + _dir3_torch.lgamma(a) - _dir3_torch.lgamma(a + 0.5))
        reg = _dir3_torch.abs(y - g) * (2.0 * v + a)
        w = 1.0 if weights is None else weights[k]
        total = total + w * (nll + reg_weight * reg)
    return total / n
