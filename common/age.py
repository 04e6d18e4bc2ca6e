"""Age estimation (AgeDB-DIR, IMDB-WIKI-DIR) as a task of the shared trainer.

Both age benchmarks read the same CSV format with the same transforms and train the same ResNet, so this base
has two users: each folder's ``task.py`` subclasses :class:`AgeTask` with its own ``dataset.py`` (CSV name,
label range, published split), ``resnet.py`` (the network) and ``loss.py`` (the objective); defaults live in
each folder's ``train.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from common import bsam, methods
from common.method import ModelSpec
from common.bins import AGE_BINS, LabelBins
from common.runtime import HDF5Pack, read_hdf5, sha256_of
from common.tools.datasplit import describe_split
from common.textfiles import read_csv
from common.errors import RunError
from common.fds import fds_from_args
from common.images import to_rgb
from common.gmm import check_fitted_on, gmm_path, labels_digest
from common.lds import bucket_prior, prepare_weights
from common.metrics import (SHOT_SELECTABLE, balanced_shot_metrics, selection_from_args, shot_metrics, shot_table,
                            uncertainty)
from common.optim import cosine_decay, optimizer_from_args, step_decay
from common.trainer import Task

# Shot thresholds of the age benchmarks (docs/methods.md §10.1); --evaluate keeps a checkpoint's own unless given.
SHOT_THRESHOLDS = {"many_shot_thr": 100, "low_shot_thr": 20}
# Flags that define the model; an evaluated checkpoint keeps its own.
MODEL_FLAGS = ("model", "width", "stem", "img_size")    # with the methods' (common.methods.model_flags)


# -- data ------------------------------------------------------------------------------------------------------
def decode_resized(image: Image.Image, img_size: int, keep_original: bool = False):
    """``image`` in RGB, resized to (img_size, img_size) as torchvision's ``Resize`` does on a PIL image
    (bilinear); (img_size, img_size, 3) uint8. The HDF5 pack stores exactly these arrays. Every mode PIL opens
    becomes RGB as :func:`common.images.to_rgb` says (16-bit grayscale scaled, not clipped to white), or a
    RunError naming the file. ``keep_original``: the pair ``(array, the RGB image at its own size)``, one
    decoding for both (RnC's crops of the original)."""
    original = to_rgb(image)
    image = original
    if image.size != (img_size, img_size):
        image = image.resize((img_size, img_size), Image.BILINEAR)
    return (np.asarray(image), original) if keep_original else np.asarray(image)


class AgeAugment:
    """The references' age augmentation on a resized (S, S, 3) uint8 array: random crop of S after zero padding,
    horizontal flip with probability 0.5 (training only), then ``ToTensor`` and normalisation to [-1, 1];
    returns (3, S, S) float32.

    It equals torchvision's ``Compose([Resize, RandomCrop(S, padding), RandomHorizontalFlip(), ToTensor(),
    Normalize(0.5, 0.5)])`` bit for bit, drawing the same random numbers from torch's generator in the same order
    (``tests/common/test_age.py``), and is about twice as fast: it crops the array once instead of padding a PIL
    image and converting it back.
    The padding is the reference's 16 px at 224 px and scales with ``img_size`` (2 px at 32 px): a fixed 16 px
    would shift a small image by half its size.
    """

    def __init__(self, img_size: int, train: bool):
        self.size, self.train = img_size, train
        self.padding = max(1, round(16 * img_size / 224))

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        size, pad = self.size, self.padding
        if pixels.shape != (size, size, 3):
            raise ValueError(f"AgeAugment: expected a ({size}, {size}, 3) array, got {pixels.shape}.")
        if self.train:
            # RandomCrop's draws on the padded (S + 2p)² image: the row, then the column of the crop's corner.
            top = int(torch.randint(0, 2 * pad + 1, size=(1,))) - pad
            left = int(torch.randint(0, 2 * pad + 1, size=(1,))) - pad
            crop = np.zeros_like(pixels)
            crop[max(0, -top):size - max(0, top), max(0, -left):size - max(0, left)] = \
                pixels[max(0, top):size + min(0, top), max(0, left):size + min(0, left)]
            if torch.rand(1) < 0.5:
                crop = crop[:, ::-1]
            pixels = crop
        # ToTensor and Normalize's own float32 operations, in their order.
        channels_first = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return channels_first.float().div(255).sub_(0.5).div_(0.5)


class RnCAugment:
    """RnC's augmentation (Zha et al., NeurIPS 2023): a random resized crop of 20–100 % of the area to S × S, a
    horizontal flip (p 0.5), colour jitter (brightness, contrast, saturation 0.4, hue 0.1; p 0.8), grayscale
    (p 0.2), then normalisation to [-1, 1]; (3, S, S) float32. torchvision's transforms, drawing from torch's
    generator, in that order.

    The input is the image at its own size (an RGB PIL image: the crop is taken from the original, as the authors'
    code crops, and resized to S by PIL in one step) or, where no original is at hand (an HDF5 pack) or with
    ``from_original=False`` (this repo's earlier views), the resized (S, S, 3) uint8 array. ``from_original``
    tells the data set which of the two to pass.
    """

    def __init__(self, img_size: int, from_original: bool = True):
        from torchvision.transforms import v2
        self.from_original = from_original
        self.crop = v2.RandomResizedCrop(img_size, scale=(0.2, 1.0), antialias=True)
        self.rest = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                                v2.RandomGrayscale(p=0.2)])

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            pixels = np.asarray(self.crop(image))
            channels_first = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        else:
            channels_first = self.crop(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        return self.rest(channels_first).float().div(255).sub_(0.5).div_(0.5)


def pack_path(data_dir, csv_name: str, img_size: int) -> Path:
    """The HDF5 pack of ``<csv_name>.csv`` at ``img_size`` (written by ``python -m common.tools.pack``)."""
    return Path(data_dir) / f"{csv_name}_{img_size}.h5"


class PackReader(HDF5Pack):
    """Read images from a pack (:class:`common.runtime.HDF5Pack`), checked against the split CSV and the image
    size; ``paths`` are the split's rows, in order."""

    def __init__(self, data_dir, csv_name: str, img_size: int, paths):
        self.paths = paths
        super().__init__(pack_path(data_dir, csv_name, img_size),
                         f"python -m common.tools.pack {csv_name} --data_dir {data_dir} --img_size {img_size}",
                         Path(data_dir) / f"{csv_name}.csv", attributes={"img_size": img_size}, what=" or image size")

    def opened(self, handle) -> None:
        names = read_hdf5(self.path, self.command, lambda: handle["paths"][()])
        index = {p.decode() if isinstance(p, bytes) else p: i for i, p in enumerate(names)}
        self.rows = [index[p] for p in self.paths]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read(lambda pack: pack["images"][self.rows[i]])


def how_to_get(path) -> str:
    """How to create the split CSV ``path`` (``agedb.csv``, ``agedb_<protocol>.csv``, ``imdb_wiki.csv``): the
    benchmark's data/ scripts for the real data, and the synthetic generator's command for a stand-in."""
    from common.tools.datasplit import PROTOCOLS
    path = Path(path)
    for dataset in ("agedb", "imdb_wiki"):
        if path.stem == dataset or path.stem.startswith(dataset + "_"):
            protocol = path.stem[len(dataset) + 1:]
            flag = f" --protocol {protocol}" if protocol in PROTOCOLS else ""
            return (f"get the real data with data/download_{dataset}.py, data/create_{dataset}.py and "
                    f"`python data/preprocess_{dataset}.py{flag}`, or write a synthetic stand-in with `python -m "
                    f"common.synthetic {dataset} --out {path.parent}{flag}`")
    return "create it with the scripts in data/"


def read_split_csv(path, max_age: float) -> pd.DataFrame:
    """A split CSV with columns ``age,path,split``; one sentence if it is missing, malformed (another separator,
    not UTF-8: :func:`common.textfiles.read_csv`), or holds an age that is empty, not a number, negative or above
    ``max_age``."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"split file {path} does not exist; {how_to_get(path)}; or point --data_dir at the folder "
                       "that holds it.")
    # Spaces after the commas and a byte-order mark are read as meant; another separator or encoding is named.
    frame = read_csv(path, ("age", "path", "split"), what="split file", remedy="; re-create it with data/",
                     dtype=str, keep_default_na=False)
    ages = pd.to_numeric(frame["age"].str.strip(), errors="coerce")
    bad = ages.isna() | ~np.isfinite(ages) | (ages < 0) | (ages > max_age)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunError(f"split file {path}, data row {row + 1} (line {row + 2}): age {frame['age'].iloc[row]!r} is "
                       f"not a number in the allowed range 0–{max_age:g}; fix or drop that row.")
    frame["age"] = ages.astype(np.float64)
    return frame


class AgeDataset(Dataset):
    """One split of an age benchmark; each sample is a dict.

    ``input``: (3, S, S) float32 image in [-1, 1]; ``views``: two more augmentations for ConR, RnC and ACCon (an
    empty tuple otherwise; ``view_transform``, default the main augmentation); ``target``: (1,) float32 age in years;
    ``weight``: (1,) float32 (re-weighting/LDS on the training split, else 1). ``train_transform``: the training
    split's augmentation in place of the references' (RnC's linear stage: :class:`RnCAugment`). A transform with
    ``from_original`` set reads the image at its own size (decoded once with the resized one; from a pack, which
    holds only the resized image, it gets that).
    """

    def __init__(self, frame: pd.DataFrame, data_dir, split: str, img_size: int, weights=None,
                 conr_views: bool = False, pack=None, view_transform=None, train_transform=None):
        frame = frame[frame["split"] == split]
        if len(frame) == 0:
            raise RunError(f"the split CSV in {data_dir} has no '{split}' rows; re-create it with data/.")
        self.data_dir = Path(data_dir)
        self.paths = frame["path"].tolist()
        self.labels = frame["age"].to_numpy(dtype=np.float32)
        self.weights = np.ones(len(frame), np.float32) if weights is None else np.asarray(weights, np.float32)
        self.img_size = img_size
        self.transform = train_transform if train_transform is not None and split == "train" else \
            AgeAugment(img_size, train=split == "train")
        self.conr_views = conr_views and split == "train"
        # The views' augmentation: the main one (ConR, as its reference) or RnC's (RnCAugment).
        self.view_transform = view_transform or self.transform
        self.pack = pack            # a PackReader of this split's rows, or None: the image files
        missing = [] if pack is not None else \
            [p for p in self.paths[:1] + self.paths[-1:] if not (self.data_dir / p).is_file()]
        if missing:
            raise RunError(f"image {self.data_dir / missing[0]} listed in the split CSV does not exist; check "
                           "--data_dir (it must hold the CSV and the image folders).")

    def __len__(self):
        return len(self.paths)

    def load(self, index: int, keep_original: bool = False):
        """The image resized to (S, S, 3) uint8, from the pack or decoded from its file; ``keep_original``: the
        pair ``(array, RGB image at its own size)`` (from a pack: the array twice)."""
        if self.pack is not None:
            pixels = self.pack[index]
            return (pixels, pixels) if keep_original else pixels
        path = self.data_dir / self.paths[index]
        try:
            with Image.open(path) as image:
                return decode_resized(image, self.img_size, keep_original)
        except FileNotFoundError:
            raise RunError(f"image {path} listed in the split CSV does not exist; restore it or re-create the CSV.")
        except OSError as error:
            raise RunError(f"image {path} could not be read ({error}); re-download it or drop it from the CSV.")

    def __getitem__(self, index):
        wants = lambda transform: getattr(transform, "from_original", False)    # noqa: E731
        views_original = self.conr_views and wants(self.view_transform)
        if views_original or wants(self.transform):
            image, original = self.load(index, keep_original=True)
        else:
            image = original = self.load(index)
        view_input = original if views_original else image
        views = tuple(self.view_transform(view_input) for _ in range(2)) if self.conr_views else ()
        main = self.transform(original if wants(self.transform) else image)
        return {"input": main, "views": views, "target": torch.tensor([self.labels[index]]),
                "weight": torch.tensor([self.weights[index]])}


# -- priors -----------------------------------------------------------------------------------------------------
# -- the task ---------------------------------------------------------------------------------------------------
class AgeTask(Task):
    """The age benchmarks' task on the shared trainer; each age folder's ``task.py`` subclasses it.

    ``args`` (the parsed command line) is read here and nowhere else. A subclass gives what differs between the
    age benchmarks: :meth:`load_frame` (its split CSV and label range), :attr:`published_split`,
    :meth:`build_network` (its ``resnet.py``) and :meth:`build_objective` (its ``loss.py``).
    """

    model_flags = MODEL_FLAGS
    eval_defaults = SHOT_THRESHOLDS
    #: the published split file of this benchmark (``common.tools.datasplit.PublishedSplit``), named in the log.
    published_split = None

    def __init__(self, args):
        self.args = args
        self.many_shot_thr, self.low_shot_thr = args.many_shot_thr, args.low_shot_thr
        # As the references, --loss mse selects on MSE (with --bmse too), anything else on L1; --balanced_metric on
        # the per-label mean of it (bMSE, bMAE); --select_on on the metric it names.
        self.metric = "mse" if args.loss == "mse" else "l1"
        default = ("bmse" if self.metric == "mse" else "bmae") if args.balanced_metric else self.metric
        balanced = "balanced " if args.balanced_metric else ""
        self.selection = selection_from_args(args, default, SHOT_SELECTABLE, name=f"val {balanced}{self.metric}")
        self.selection_name = self.selection.name
        self.train_labels = None

    @staticmethod
    def run_name(args) -> str:
        """A run folder name built from the flags (the reference's naming, without a timestamp)."""
        from common.cli import method_tags
        return "_".join([args.dataset, args.model, args.optimizer, args.loss, f"{args.lr:g}", str(args.batch_size),
                         *method_tags(args)])

    # ---- what a benchmark folder gives ----
    def load_frame(self) -> pd.DataFrame:
        """The split CSV (``age,path,split``), ages checked against the benchmark's range."""
        raise NotImplementedError

    def build_network(self, fds):
        """The regressor (``pred``, ``encoding``, with SRL ``projection``) with ``fds`` (an :class:`FDS` or None)."""
        raise NotImplementedError

    def build_loss(self, gmm_file, bni_prior, label_counts):
        """The objective from the flags, with Balanced MSE's prior: ``gmm_file`` (GAI) or ``bni_prior`` (BNI), and
        the training histogram ``label_counts`` on ``AGE_BINS`` (UVOTE's head weights); the training ages are
        ``self.train_labels`` (Dist Loss's KDE)."""
        raise NotImplementedError

    # ---- data ----
    def datasets(self) -> dict:
        a = self.args
        frame = self.load_frame()
        csv = Path(a.data_dir) / f"{a.dataset}.csv"
        self.fingerprint = {csv.name: sha256_of(csv)}
        self.log(describe_split(csv, self.published_split))
        train_labels = frame.loc[frame["split"] == "train", "age"].to_numpy(np.float64)
        if len(train_labels) == 0:
            raise RunError(f"the split CSV in {a.data_dir} has no 'train' rows; re-create it with data/.")
        if a.srl and train_labels.max() >= a.srl_num_labels:
            raise RunError(f"--srl_num_labels {a.srl_num_labels} is too small for training ages up to "
                           f"{int(train_labels.max())}; raise it to {int(train_labels.max()) + 1}.")
        self.train_labels = train_labels
        if a.fds and train_labels.max() > a.bucket_num - 1:
            self.log(f"warning: --fds tracks ages {a.bucket_start}–{a.bucket_num - 1} (--bucket_num {a.bucket_num}); "
                     f"the training ages above, up to {train_labels.max():g}, are calibrated only in a batch that "
                     f"holds age {a.bucket_num - 1} exactly, else not at all (the reference's rule); raise "
                     f"--bucket_num to {int(train_labels.max()) + 1} to track them.")
        # --reweight/--lds, or BSAM's own 1/√n (bsam.weighting); --lds without --reweight smooths what UVOTE's heads
        # or BNI's prior count, not sample weights. BSAM's weights count each integer age (the authors' table, which
        # has IMDB-WIKI's ages above 120 too); DIR's re-weighting counts ages ≥ 120 in one bin.
        rule = bsam.weighting(a)
        bins = LabelBins(0, 1, int(train_labels.max()) + 1) if rule.own else AGE_BINS
        weights = prepare_weights(train_labels, rule.reweight, rule.lds, a.lds_kernel, a.lds_ks, a.lds_sigma,
                                  bins=bins, truncate_smoothed_counts=a.lds_truncate, rescale=rule.rescale)
        if rule.own and not a.evaluate:
            self.log(bsam.weights_note(a, weights))
        # RnC's augmentation crops the original image (the authors'), or the resized one (--rnc_crop resized);
        # its linear stage trains the head on the same augmentation (--rnc_linear_aug rnc, the authors'). ACCon's
        # AgeDB views are RnC's augmentation too (--accon_augment rnc).
        from_original = getattr(a, "rnc_crop", "original") == "original"
        rnc_views = a.rnc or (a.accon and a.accon_augment == "rnc")
        view_transform = RnCAugment(a.img_size, from_original) if rnc_views else None
        linear = getattr(a, "rnc_stage", "none") == "linear" and getattr(a, "rnc_linear_aug", "rnc") == "rnc"
        train_transform = RnCAugment(a.img_size, from_original) if linear else None
        if a.rnc and a.conr:
            self.log("--rnc with --conr: both regularisers read the same two views, drawn with RnC's augmentation")
        elif a.accon and (a.conr or a.rnc):
            augment = "RnC's" if rnc_views else "the main"
            self.log(f"--accon with {'--conr' if a.conr else '--rnc'}: both regularisers read the same two views, "
                     f"drawn with {augment} augmentation")
        if (rnc_views or linear) and from_original and a.data_format == "hdf5":
            self.log(f"RnC's crops: from the packed {a.img_size}-px images (a pack holds no original image; the "
                     "image files give the authors' crops of the original)")

        def split(name, w=None, views=False):
            pack = None
            if a.data_format == "hdf5":
                pack = PackReader(a.data_dir, a.dataset, a.img_size, frame.loc[frame["split"] == name, "path"].tolist())
            return AgeDataset(frame, a.data_dir, name, a.img_size, w, views, pack, view_transform, train_transform)

        views = a.conr or a.rnc or a.accon
        if getattr(a, "swap_val_test", False):
            # Group-DIR's AgeDB code unpacks (train, val, test) as (train, test, val): selection on the test split.
            self.log("warning: --swap_val_test: the best checkpoint is selected on the test split and the "
                     "validation split is reported as 'test' (Group-DIR's AgeDB code); these are not test numbers.")
            return {"train": split("train", weights, views), "val": split("test"), "test": split("val")}
        return {"train": split("train", weights, views), "val": split("val"), "test": split("test")}

    # ---- model, objective, optimiser ----
    def build_model(self):
        a = self.args
        from common.models.resnet import ResNetRegressor
        # With --vir, VIR's probabilistic smoothing of the latent mean and variance.
        fds = fds_from_args(a, ResNetRegressor.encoding_dim_of(a.model, a.width),
                            alias_last_epoch=a.fds_alias_last_epoch)
        labels = self.train_labels
        spec = ModelSpec(head=("linear.", "fc."), retrained=("linear.",), part="trunk", fits=f"--model {a.model}",
                         flags="--model, --width and --stem",
                         label_mean=None if labels is None else float(labels.mean()),
                         label_std=None if labels is None else float(labels.std()))
        return methods.prepare_model(a, self.build_network(fds), spec, self.log)

    def build_objective(self):
        """The folder's objective (:meth:`build_loss`) with Balanced MSE's prior: the GAI mixture file or the BNI
        prior of the training ages."""
        a = self.args
        if a.bmse:
            self.log(f"--bmse replaces the regression loss; --loss {a.loss} only chooses the validation metric "
                     f"that selects the best checkpoint ({self.selection_name}).")
        gmm_file = gmm_path(a.gmm, a.data_dir) if a.bmse and a.imp == "gai" else None
        if gmm_file is not None:
            check_fitted_on(gmm_file, labels_digest(self.train_labels), f"training ages ({a.dataset}.csv)",
                            f"re-create it with `python data/preprocess_gmm.py --data_dir {a.data_dir}`")
        prior = bucket_prior(self.train_labels, a.lds, a.lds_kernel, a.lds_ks, a.lds_sigma, truncate=a.lds_truncate) \
            if a.bmse and a.imp == "bni" else None
        return self.build_loss(gmm_file, prior, AGE_BINS.histogram(self.train_labels))

    def build_optimizer(self, model, objective):
        """Adam (no weight decay, as the age references) or SGD with ``--weight_decay``; lr × 0.1 at each
        ``--schedule`` epoch, or RnC's and BSAM's cosine over ``--epoch`` (``--lr_schedule cosine``); Balanced
        MSE's σ in its own group at ``--sigma_lr``, unscheduled."""
        a = self.args
        factor = cosine_decay(a.epoch) if getattr(a, "lr_schedule", "step") == "cosine" else step_decay(a.schedule)
        return optimizer_from_args(a, model, objective, adam_weight_decay=False, lr_factor=factor)

    # ---- prediction, metrics ----
    def data_fingerprint(self) -> dict:
        """The split CSV's SHA-256 (``{'agedb.csv': …}``)."""
        return getattr(self, "fingerprint", {})

    def metrics(self, preds, labels) -> dict:
        return shot_metrics(preds, labels, self.train_labels, self.many_shot_thr, self.low_shot_thr, balanced=True)

    def selection_score(self, preds, labels, metrics) -> float:
        return self.selection.score(metrics)

    def report(self, name, preds, labels, metrics) -> str:
        """The shot table and its balanced rows; with ``--balanced_metric`` also the shot table of the balanced
        metrics (the mean over labels, bMSE/bMAE, as ``balanced_shot_metrics`` gives it)."""
        table = shot_table(name, metrics)
        if self.args.balanced_metric:
            balanced = balanced_shot_metrics(preds, labels, self.train_labels, self.many_shot_thr, self.low_shot_thr)
            table += "\n" + shot_table("bal.", balanced, balanced=False)
        return table

    def baseline_predictions(self, labels):
        return np.full_like(labels, self.train_labels.mean())

    def save_predictions(self, path, preds, labels, sigma=None) -> None:
        np.savez(path, preds=preds, labels=labels, train_labels=self.train_labels,
                 many_shot_thr=self.many_shot_thr, low_shot_thr=self.low_shot_thr, **uncertainty(sigma))
