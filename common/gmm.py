"""A 1-D Gaussian mixture fitted to training labels, the prior of Balanced MSE's GAI (Ren et al., CVPR 2022).

The reference fits ``sklearn.mixture.GaussianMixture(K, random_state=0)`` and pickles it; here a plain EM
(deterministic quantile initialisation) fits the same model, and the result is saved as NPZ or JSON with the
arrays GAI reads: ``means`` (K, 1), ``weights`` (K,), ``variances`` (K, 1, 1).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.errors import RunError


def fit_gmm_1d(values, n_components: int = 8, max_iter: int = 500, tol: float = 1e-8, reg_covar: float = 1e-6):
    """EM for a 1-D mixture. values: (N,). Returns ``{'means': (K,1), 'weights': (K,), 'variances': (K,1,1)}``."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < n_components:
        raise ValueError(f"fit_gmm_1d: {x.size} values cannot fit {n_components} components.")
    # Initialise like sklearn (k-means), deterministically: Lloyd iterations from evenly spaced quantiles of
    # the distinct values (distinct, so that repeated values cannot start two components at one point).
    means = np.quantile(np.unique(x), (np.arange(n_components) + 0.5) / n_components)
    for _ in range(100):
        assign = np.abs(x[:, None] - means).argmin(1)
        counts = np.bincount(assign, minlength=n_components)
        sums = np.bincount(assign, weights=x, minlength=n_components)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), means)
        if np.array_equal(updated, means):
            break
        means = updated
    counts = np.maximum(np.bincount(assign, minlength=n_components), 1)
    variances = np.bincount(assign, weights=(x - means[assign]) ** 2, minlength=n_components) / counts + reg_covar
    weights = counts / counts.sum()
    previous = -np.inf
    for _ in range(max_iter):
        log_p = (np.log(weights) - 0.5 * np.log(2 * np.pi * variances)
                 - (x[:, None] - means) ** 2 / (2 * variances))                      # (N, K)
        log_norm = np.logaddexp.reduce(log_p, axis=1)
        resp = np.exp(log_p - log_norm[:, None])
        mass = resp.sum(0) + 10 * np.finfo(np.float64).eps
        weights = mass / x.size
        means = resp.T @ x / mass
        variances = (resp * (x[:, None] - means) ** 2).sum(0) / mass + reg_covar
        likelihood = log_norm.mean()
        if abs(likelihood - previous) < tol:
            break
        previous = likelihood
    order = np.argsort(means)
    return {"means": means[order].reshape(-1, 1), "weights": weights[order],
            "variances": variances[order].reshape(-1, 1, 1)}


def save_gmm(gmm: dict, path, fitted_on: str | None = None) -> None:
    """Write ``gmm`` as ``.npz`` (or ``.json``); ``fitted_on`` names the content it was fitted on (the SHA-256
    of the training labels it came from, :func:`labels_digest`), which :func:`check_fitted_on` compares."""
    path = Path(path)
    record = {k: np.asarray(v) for k, v in gmm.items() if k in ("means", "weights", "variances")}
    if fitted_on is not None:
        record["fitted_on"] = np.asarray(fitted_on)
    from common.runtime import write_atomic
    if path.suffix == ".json":
        text = json.dumps({k: v.tolist() for k, v in record.items()}, indent=2)
        write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    else:
        # np.savez names a path without the suffix ``<path>.npz``: so is the file written here.
        write_atomic(path if path.suffix == ".npz" else path.with_name(path.name + ".npz"),
                     lambda tmp: np.savez(tmp, **record))


def labels_digest(values) -> str:
    """The SHA-256 of training labels as float64 (what a GAI prior is fitted on): equal labels, equal digest."""
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(np.asarray(values, dtype=np.float64)).tobytes()).hexdigest()


def check_fitted_on(path, digest: str, what: str, remedy: str) -> None:
    """Refuse a GMM file that records being fitted on other labels than ``digest`` (``what`` names them in the
    sentence, ``remedy`` says what to do, e.g. the command that re-creates the file). A file without the record (written before it, or by hand) is
    accepted: there is nothing to compare."""
    path = Path(path)
    if not path.is_file():
        return                               # load_gmm says that it is missing
    try:
        if path.suffix == ".json":
            recorded = json.loads(path.read_text()).get("fitted_on")
        else:
            with np.load(path) as data:
                recorded = str(data["fitted_on"]) if "fitted_on" in data.files else None
    except Exception:  # noqa: BLE001 - an empty, damaged or foreign file: load_gmm says what it is
        return
    if recorded is not None and recorded != digest:
        raise RunError(f"GMM file {path} was not fitted on this run's {what} (the data changed since it was "
                       f"written); {remedy}.")


#: what every sentence about a bad ``--gmm`` file says a GMM file is, and how to make one.
GMM_FILE = ("a GMM file is the .npz (or .json) that `python data/preprocess_gmm.py` writes from the training labels, "
            "with arrays means (K, 1), weights (K,) and variances (K, 1, 1): re-create it with that script (STS-B "
            "fits one itself when --gmm is not given)")
_ZIP, _NPY, _PICKLE = b"PK\x03\x04", b"\x93NUMPY", b"\x80"


def _starts_with(raw: bytes) -> str:
    return repr(raw[:24].decode("utf-8", "replace")) + ("…" if len(raw) > 24 else "")


def _read_gmm_arrays(path: Path) -> dict:
    """The arrays of a GMM file, or a :class:`RunError` saying what the file holds instead."""
    raw = path.read_bytes()
    if not raw:
        raise RunError(f"GMM file {path} is empty; {GMM_FILE}.")
    if path.suffix == ".json":
        try:
            record = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            raise RunError(f"GMM file {path} could not be read: it is not JSON (it starts with {_starts_with(raw)}); "
                           f"{GMM_FILE}.") from None
        if not isinstance(record, dict):
            raise RunError(f"GMM file {path} could not be read: it holds a {type(record).__name__}, not an object "
                           f"with means, weights and variances; {GMM_FILE}.")
        return record
    if raw.startswith(_NPY):
        raise RunError(f"GMM file {path} could not be read: it holds one array (a .npy file), not the .npz archive "
                       f"of three; {GMM_FILE}.")
    if not raw.startswith(_ZIP):
        what = ("a Python pickle (such as the reference's sklearn gmm.pkl), not a NumPy .npz archive"
                if raw.startswith(_PICKLE) else f"not a NumPy .npz archive (it starts with {_starts_with(raw)})")
        raise RunError(f"GMM file {path} could not be read: it is {what}; {GMM_FILE}.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as error:  # noqa: BLE001 - a truncated or damaged archive, whatever the zip module says
        raise RunError(f"GMM file {path} could not be read: it is a damaged .npz archive ({type(error).__name__}); "
                       f"{GMM_FILE}.") from error


def load_gmm(path) -> dict:
    """Read a GMM saved by :func:`save_gmm` (``.npz`` or ``.json``); a :class:`RunError` naming the file, what it
    holds and what a GMM file is (:data:`GMM_FILE`) for anything else."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"GMM file {path} is a folder; pass the file in it (gmm.npz); {GMM_FILE}.")
    if not path.is_file():
        raise RunError(f"GMM file {path} does not exist; fit it with `python data/preprocess_gmm.py` "
                       "or pass --gmm PATH.")
    raw = _read_gmm_arrays(path)
    missing = [k for k in ("means", "weights", "variances") if k not in raw]
    if missing:
        raise RunError(f"GMM file {path} could not be read: it has no {', '.join(missing)} (it holds "
                       f"{', '.join(map(str, raw)) or 'nothing'}); {GMM_FILE}.")
    try:
        gmm = {k: np.asarray(raw[k], dtype=np.float64) for k in ("means", "weights", "variances")}
    except (TypeError, ValueError):
        raise RunError(f"GMM file {path} could not be read: its means, weights or variances are not arrays of "
                       f"numbers; {GMM_FILE}.") from None
    sizes = [gmm[k].size for k in ("means", "weights", "variances")]
    if len(set(sizes)) != 1 or sizes[0] == 0:
        raise RunError(f"GMM file {path} could not be read: it holds {sizes[0]} means, {sizes[1]} weights and "
                       f"{sizes[2]} variances, where a mixture of K components has K of each; {GMM_FILE}.")
    if not all(np.isfinite(v).all() for v in gmm.values()) or (gmm["weights"] < 0).any() \
            or (gmm["variances"] < 0).any() or gmm["weights"].sum() <= 0:
        raise RunError(f"GMM file {path} could not be read: its values are not finite, or a weight or variance is "
                       f"negative; {GMM_FILE}.")
    return gmm


def gmm_path(gmm: str, data_dir) -> Path:
    """The GAI prior file. The reference's ``--gmm gmm.pkl`` (a sklearn pickle, never read here) maps to the
    ``gmm.npz`` that ``data/preprocess_gmm.py`` writes, so its published command lines run unchanged."""
    path = Path(gmm) if gmm else Path(data_dir) / "gmm.npz"
    if path.suffix == ".pkl":
        path = Path(data_dir) / "gmm.npz"
    return path


def fit_from_split_csv(csv_path, n_components: int, out_path) -> dict:
    """Fit the GMM on the training ages of an ``age,path,split`` CSV and save it (``.npz`` or ``.json``)."""
    import pandas as pd

    from common.textfiles import read_csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise RunError(f"split file {csv_path} does not exist; create it first (see the README) or pass --data_dir.")
    frame = read_csv(csv_path, ("age", "split"), what="split file", expected="age,path,split")
    train = frame.loc[frame["split"].astype(str).str.strip() == "train", "age"]
    ages = pd.to_numeric(train, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(ages).all():
        row = int(train.index[np.flatnonzero(~np.isfinite(ages))[0]])
        raise RunError(f"split file {csv_path}, data row {row + 1} (line {row + 2}): age {train[row]!r} is not a "
                       "number; fix or drop that row.")
    if ages.size < n_components:
        raise RunError(f"split file {csv_path} has {ages.size} training rows, too few for --K {n_components}.")
    gmm = fit_gmm_1d(ages, n_components)
    save_gmm(gmm, out_path, fitted_on=labels_digest(ages))
    return gmm


def main(argv, csv_name: str) -> None:
    """The ``data/preprocess_gmm.py`` command of each age benchmark (``csv_name``: its split CSV's stem)."""
    import argparse

    parser = argparse.ArgumentParser(description=f"Fit the GAI prior on the training ages of {csv_name}.csv.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="./data", help=f"folder holding {csv_name}.csv")
    parser.add_argument("--K", type=int, default=8, help="mixture components")
    parser.add_argument("--out", default="", help="output file (.npz or .json); default <data_dir>/gmm.npz")
    args = parser.parse_args(argv)
    if args.K < 1:
        parser.error(f"--K must be >= 1, got {args.K}.")
    out = Path(args.out) if args.out else Path(args.data_dir) / "gmm.npz"
    try:
        gmm = fit_from_split_csv(Path(args.data_dir) / f"{csv_name}.csv", args.K, out)
    except RunError as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {out}: means {gmm['means'].ravel().round(2).tolist()}")
