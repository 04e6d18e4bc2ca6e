"""Age estimation (AgeDB-DIR, IMDB-WIKI-DIR): the data set, the objective and the training run.

Both age benchmarks share everything here; their folders hold the defaults, the data set name and the data
scripts. ``run(args)`` trains (or, with ``--evaluate``, tests) one model:

* per epoch: a training pass (all enabled losses), the FDS/SRL statistics pass, validation, checkpoints;
* at the end: the best checkpoint (val MAE, or MSE for ``--loss mse``) on the test split, ``results.json``
  (``{"val": M, "test": M, "epoch": e, "args": {...}}`` with ``M`` as returned by ``shot_metrics``) and the
  per-sample test predictions for ``python -m common.report``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from common import engine
from common.cli import SHOT_THRESHOLDS
from common.engine import RunError
from common.fds import FDS
from common.gmm import load_gmm
from common.lds import prepare_weights, smoothed_bin_counts
from common.losses import (BMCLoss, BNILoss, GAILoss, ConR, RankSim, RegressionLoss, SRL)
from common.metrics import SHOTS, balanced_shot_metrics, shot_metrics
from common.models.resnet import ResNetRegressor

# Flags that define the model; an evaluated or resumed checkpoint keeps its own.
MODEL_FLAGS = ("model", "width", "stem", "fds", "fds_kernel", "fds_ks", "fds_sigma", "start_update", "start_smooth",
               "bucket_num", "bucket_start", "fds_mmt", "srl", "embedding_dim", "srl_num_labels", "n_points",
               "img_size")
# Flags a resumed run may change: everything else comes from the checkpoint, so the run continues exactly.
RESUME_FLAGS = ("epoch", "resume", "workers", "device", "gpu", "print_freq", "data_dir", "evaluate")


# -- data ------------------------------------------------------------------------------------------------------
def age_transform(img_size: int, train: bool):
    """Reference augmentation: resize, random crop with padding, horizontal flip, normalise to [-1, 1].

    The padding is the reference's 16 px at 224 px and scales with ``img_size`` (2 px at 32 px): a fixed 16 px
    would shift a small image by half its size.
    """
    steps = [transforms.Resize((img_size, img_size))]
    if train:
        padding = max(1, round(16 * img_size / 224))
        steps += [transforms.RandomCrop(img_size, padding=padding), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    return transforms.Compose(steps)


def read_split_csv(data_dir, dataset: str) -> pd.DataFrame:
    """``<data_dir>/<dataset>.csv`` with columns ``age,path,split``; one sentence if it is missing or malformed."""
    path = Path(data_dir) / f"{dataset}.csv"
    if not path.is_file():
        raise RunError(f"split file {path} does not exist; create it with the scripts in data/ (see the README) "
                       "or point --data_dir at the folder that holds it.")
    try:
        frame = pd.read_csv(path)
    except Exception as error:  # noqa: BLE001
        raise RunError(f"split file {path} could not be parsed ({error}); re-create it with data/.") from error
    missing = {"age", "path", "split"} - set(frame.columns)
    if missing:
        raise RunError(f"split file {path} lacks the column(s) {', '.join(sorted(missing))}; expected age,path,split.")
    return frame


class AgeDataset(Dataset):
    """One split of an age benchmark: ``(image, views, label, weight)`` per sample.

    image: (3, S, S) float32 in [-1, 1]; views: a tuple of two more augmentations for ConR (empty otherwise);
    label: (1,) float32 age in years; weight: (1,) float32 (re-weighting/LDS on the training split, else 1).
    """

    def __init__(self, frame: pd.DataFrame, data_dir, split: str, img_size: int, weights=None,
                 conr_views: bool = False):
        frame = frame[frame["split"] == split]
        if len(frame) == 0:
            raise RunError(f"the split CSV in {data_dir} has no '{split}' rows; re-create it with data/.")
        self.data_dir = Path(data_dir)
        self.paths = frame["path"].tolist()
        self.labels = frame["age"].to_numpy(dtype=np.float32)
        self.weights = np.ones(len(frame), np.float32) if weights is None else np.asarray(weights, np.float32)
        self.transform = age_transform(img_size, train=split == "train")
        self.conr_views = conr_views and split == "train"
        missing = [p for p in self.paths[:1] + self.paths[-1:] if not (self.data_dir / p).is_file()]
        if missing:
            raise RunError(f"image {self.data_dir / missing[0]} listed in the split CSV does not exist; check "
                           "--data_dir (it must hold the CSV and the image folders).")

    def __len__(self):
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.data_dir / self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise RunError(f"image {path} listed in the split CSV does not exist; restore it or re-create the CSV.")
        except OSError as error:
            raise RunError(f"image {path} could not be read ({error}); re-download it or drop it from the CSV.")

    def __getitem__(self, index):
        image = self.load(index)
        views = tuple(self.transform(image) for _ in range(2)) if self.conr_views else ()
        label = torch.tensor([self.labels[index]])
        weight = torch.tensor([self.weights[index]])
        return self.transform(image), views, label, weight


# -- the objective ----------------------------------------------------------------------------------------------
def bucket_prior(train_labels, args, max_target: int = 200):
    """BNI prior: integer-age centres 0…max_target−1 and their (LDS-smoothed) training counts, empty dropped."""
    bins = np.minimum(max_target - 1, np.asarray(train_labels).astype(np.int64))
    counts = np.bincount(bins, minlength=max_target).astype(np.float64)
    if args.lds:
        counts = smoothed_bin_counts(counts, "none", True, args.lds_kernel, args.lds_ks, args.lds_sigma)
    keep = counts > 0
    return np.arange(max_target)[keep].astype(np.float64), counts[keep] / counts[keep].sum()


def gmm_path(args) -> Path:
    """The GAI prior file. The reference's ``--gmm gmm.pkl`` (a sklearn pickle, never read here) maps to the
    ``gmm.npz`` that ``data/preprocess_gmm.py`` writes, so its published command lines run unchanged."""
    path = Path(args.gmm) if args.gmm else Path(args.data_dir) / "gmm.npz"
    if path.suffix == ".pkl":
        path = Path(args.data_dir) / "gmm.npz"
    return path


class AgeObjective(nn.Module):
    """Every enabled loss of one training step, returned as named, already weighted components.

    Holds the state the losses need (Balanced MSE's σ, SRL's points and surrogate tracker), so that a
    checkpoint of this module restores them.
    """

    def __init__(self, args, train_labels):
        super().__init__()
        self.args = args
        if args.bmse:
            if args.imp == "bmc":
                self.bmse = BMCLoss(args.init_noise_sigma)
            elif args.imp == "gai":
                self.bmse = GAILoss(args.init_noise_sigma, load_gmm(gmm_path(args)))
            else:
                self.bmse = BNILoss(args.init_noise_sigma, *bucket_prior(train_labels, args))
            self.bmse.noise_sigma.requires_grad_(not args.fix_noise_sigma)
        else:
            self.regression = RegressionLoss(args.loss)
        self.ranksim = RankSim(args.interpolation_lambda) if args.regularization_weight > 0 else None
        self.conr = ConR(args.conr_window, args.conr_temperature, args.conr_eta,
                         args.conr_denominator) if args.conr else None
        if args.srl:
            self.srl = SRL(args.srl_num_labels, args.embedding_dim, args.n_points, args.temperature,
                           args.srl_homogeneity_alpha, seed=args.seed)
            # The surrogate: per-label running mean of the projections (an FDS that never smooths).
            self.surrogate = FDS(args.embedding_dim, bucket_num=args.srl_num_labels, bucket_start=0,
                                 start_update=args.start_update, start_smooth=2 ** 62, kernel=args.fds_kernel,
                                 ks=args.fds_ks, sigma=args.fds_sigma, momentum=args.fds_mmt)
        else:
            self.srl = None

    def forward(self, model, batch, epoch: int) -> dict:
        images, views, targets, weights = batch
        args = self.args
        out = model(images, targets, epoch)
        pred = out["pred"]
        components = {}
        if args.bmse:
            components["bmse"] = self.bmse(pred.float(), targets)
        else:
            components[args.loss] = self.regression(pred.float(), targets, weights)
        if self.ranksim is not None:
            components["ranksim"] = args.regularization_weight * self.ranksim(out["encoding"], targets)
        if self.conr is not None:
            view_out = model(torch.cat(views), None, epoch, smooth=False)
            components["conr"] = args.conr_beta * self.conr(
                view_out["encoding"], targets.repeat(2, 1), view_out["pred"].detach(), weights.repeat(2, 1))
        if self.srl is not None:
            slots = targets.clamp(max=args.srl_num_labels - 1)
            contrastive, enveloping, homogeneity = self.srl(out["projection"], slots,
                                                            self.surrogate.running_mean)
            components["srl_contrastive"] = args.w1 * contrastive
            components["srl_enveloping"] = args.w2 * enveloping
            components["srl_homogeneity"] = args.w3 * homogeneity
        return components


# -- the run -------------------------------------------------------------------------------------------------
def run_name(args) -> str:
    """A run folder name built from the flags (the reference's naming, without a timestamp)."""
    parts = [args.dataset, args.model, args.optimizer, args.loss, f"{args.lr:g}", str(args.batch_size)]
    if args.reweight != "none":
        parts.append(args.reweight)
    if args.lds:
        parts.append(f"lds_{args.lds_kernel[:3]}_{args.lds_ks}_{args.lds_sigma:g}")
    if args.fds:
        parts.append(f"fds_{args.fds_kernel[:3]}_{args.fds_ks}_{args.fds_sigma:g}_{args.start_update}_"
                     f"{args.start_smooth}_{args.fds_mmt:g}")
    if args.bmse:
        parts.append(f"bmse_{args.imp}_{args.init_noise_sigma:g}")
    if args.regularization_weight > 0:
        parts.append(f"ranksim_{args.regularization_weight:g}_{args.interpolation_lambda:g}")
    if args.conr:
        parts.append(f"conr_{args.conr_beta:g}_w{args.conr_window:g}_t{args.conr_temperature:g}_e{args.conr_eta:g}")
    if args.srl:
        parts.append(f"srl_{args.w1:g}_{args.w2:g}_{args.w3:g}_t{args.temperature:g}")
    if args.retrain_fc:
        parts.append("rrt")
    parts.append(f"seed{args.seed}")
    return "_".join(parts)


def build_model(args) -> ResNetRegressor:
    fds = None
    if args.fds:
        fds = FDS(ResNetRegressor.encoding_dim_of(args.model, args.width), args.bucket_num, args.bucket_start,
                  args.start_update, args.start_smooth, args.fds_kernel, args.fds_ks, args.fds_sigma, args.fds_mmt)
    return ResNetRegressor(args.model, fds=fds, projection_dim=args.embedding_dim if args.srl else None,
                           width=args.width, stem=args.stem)


def make_loader(dataset, args, shuffle: bool, generator=None) -> DataLoader:
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=args.workers, pin_memory=False,
                      persistent_workers=False)


def to_device(batch, device):
    images, views, targets, weights = batch
    return (images.to(device, non_blocking=True), tuple(v.to(device, non_blocking=True) for v in views),
            targets.to(device), weights.to(device))


@torch.no_grad()
def predict(model, loader, device, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N,) predictions and labels of a split, model in eval mode."""
    model.eval()
    preds, labels = [], []
    for images, _, targets, _ in loader:
        with autocast(device, amp):
            preds.append(model(images.to(device))["pred"].float().cpu())
        labels.append(targets)
    return torch.cat(preds).numpy().reshape(-1), torch.cat(labels).numpy().reshape(-1)


def autocast(device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def selection_metric(args) -> str:
    return "mse" if args.loss == "mse" and not args.bmse else "l1"


def format_metrics(name: str, metrics: dict) -> str:
    rows = [f" * {name:5s}  {'MSE':>8s} {'L1':>8s} {'G-Mean':>8s} {'count':>6s}"]
    for shot in SHOTS:
        m = metrics[shot]
        rows.append(f"   {shot:6s} {m['mse']:8.3f} {m['l1']:8.3f} {m['gmean']:8.3f} {m['count']:6d}")
    return "\n".join(rows)


def fill_shot_thresholds(args, saved_args: dict) -> None:
    """Thresholds not given on the command line: the checkpoint's (a run evaluates as it was trained), else the
    benchmark's 100 / 20."""
    for flag, default in SHOT_THRESHOLDS.items():
        if getattr(args, flag, None) is None:
            setattr(args, flag, saved_args.get(flag) or default)


class AgeRun:
    """One training (or evaluation) run; see the module docstring."""

    def __init__(self, args):
        self.args = args
        self.device = engine.resolve_device(args.device, args.gpu)

    # ---- set-up ----
    def data(self, conr_views: bool):
        args = self.args
        frame = read_split_csv(args.data_dir, args.dataset)
        train_labels = frame.loc[frame["split"] == "train", "age"].to_numpy(np.float64)
        if len(train_labels) == 0:
            raise RunError(f"the split CSV in {args.data_dir} has no 'train' rows; re-create it with data/.")
        if args.srl and train_labels.max() >= args.srl_num_labels:
            raise RunError(f"--srl_num_labels {args.srl_num_labels} is too small for training ages up to "
                           f"{int(train_labels.max())}; raise it to {int(train_labels.max()) + 1}.")
        weights = prepare_weights(train_labels, args.reweight, args.lds, args.lds_kernel, args.lds_ks,
                                  args.lds_sigma)
        make = lambda split, w=None, views=False: AgeDataset(frame, args.data_dir, split, args.img_size, w, views)
        return train_labels, make("train", weights, conr_views), make("val"), make("test")

    def evaluate(self) -> dict:
        """``--evaluate --resume CKPT``: test the checkpoint, print the table, write eval.json beside it."""
        args = self.args
        checkpoint = engine.load_checkpoint(args.resume)
        for flag in MODEL_FLAGS:
            if flag in checkpoint.get("args", {}):
                setattr(args, flag, checkpoint["args"][flag])
        fill_shot_thresholds(args, checkpoint.get("args", {}))
        train_labels, _, _, test_set = self.data(conr_views=False)
        model = build_model(args).to(self.device)
        load_model_state(model, checkpoint["state_dict"], args.resume)
        preds, labels = predict(model, make_loader(test_set, args, False), self.device, args.amp)
        metrics = shot_metrics(preds, labels, train_labels, args.many_shot_thr, args.low_shot_thr)
        print(format_metrics("test", metrics))
        engine.write_json({"test": metrics, "epoch": checkpoint.get("epoch"), "checkpoint": str(args.resume),
                           "args": vars(args)}, Path(args.resume).parent / "eval.json")
        return metrics

    def train(self) -> dict:
        args = self.args
        checkpoint = None
        if args.resume:
            checkpoint = engine.load_checkpoint(args.resume)
            saved = dict(checkpoint["args"])
            for flag in RESUME_FLAGS:
                saved[flag] = getattr(args, flag)
            args = self.args = argparse.Namespace(**saved)
            run_dir = Path(args.resume).resolve().parent
        else:
            run_dir = Path(args.store_root) / (args.store_name or run_name(args))
            if run_dir.exists() and any(run_dir.iterdir()) and not args.overwrite:
                raise RunError(f"run folder {run_dir} already exists; pass --overwrite to reuse it, --resume "
                               f"{run_dir / 'ckpt.pth.tar'} to continue it, or another --store_name.")
            run_dir.mkdir(parents=True, exist_ok=True)
        fill_shot_thresholds(args, {})
        engine.seed_everything(args.seed)
        logger = engine.make_logger(run_dir)
        scalars = engine.ScalarLogger(run_dir)
        logger.info(f"run folder {run_dir}  device {self.device}")

        train_labels, train_set, val_set, test_set = self.data(conr_views=args.conr)
        model = build_model(args).to(self.device)
        objective = AgeObjective(args, train_labels).to(self.device)
        if args.pretrained:
            pretrained = engine.load_checkpoint(args.pretrained)["state_dict"]
            trunk = {k: v for k, v in pretrained.items() if not k.startswith(("linear.", "fc."))}
            model.load_state_dict(trunk, strict=False)
            logger.info(f"loaded the trunk of {args.pretrained} ({len(trunk)} tensors)")
        if args.retrain_fc:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith("linear."))
        optimizer, scheduler = build_optimizer(args, model, objective)

        start_epoch, best, best_epoch, best_val = 0, math.inf, -1, None
        if checkpoint is not None:
            load_model_state(model, checkpoint["state_dict"], args.resume)
            objective.load_state_dict(checkpoint["objective"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start_epoch, best, best_epoch = checkpoint["epoch"], checkpoint["best_metric"], checkpoint["best_epoch"]
            best_val = checkpoint.get("best_val")
            logger.info(f"resumed from {args.resume} at epoch {start_epoch}")

        metric = selection_metric(args)
        loader_generator = torch.Generator()
        train_loader = make_loader(train_set, args, True, loader_generator)
        val_loader = make_loader(val_set, args, False)
        ckpt_path, best_path = run_dir / "ckpt.pth.tar", run_dir / "ckpt.best.pth.tar"
        for epoch in range(start_epoch, args.epoch):
            # Every epoch is a pure function of (seed, epoch, state): resuming after any epoch is exact.
            engine.seed_everything(args.seed * 100_003 + epoch)
            loader_generator.manual_seed(args.seed * 100_003 + epoch)
            components = self.train_epoch(model, objective, optimizer, train_loader, epoch, logger, ckpt_path)
            self.statistics_pass(model, objective, train_loader, epoch)
            scheduler.step()
            preds, labels = predict(model, val_loader, self.device, args.amp)
            val = shot_metrics(preds, labels, train_labels, args.many_shot_thr, args.low_shot_thr)
            logger.info(f"epoch {epoch} validation\n" + format_metrics("val", val))
            selected = val
            if args.balanced_metric:
                selected = balanced_shot_metrics(preds, labels, train_labels, args.many_shot_thr, args.low_shot_thr)
                logger.info(format_metrics("bal.", selected))
            for name, value in components.items():
                scalars.log(f"train/{name}", value, epoch)
            scalars.log("train/lr", optimizer.param_groups[0]["lr"], epoch)
            for shot in SHOTS:
                for key in ("mse", "l1", "gmean"):
                    scalars.log(f"val/{shot}_{key}", val[shot][key], epoch)
            if selected["all"][metric] < best:
                best, best_epoch, best_val = selected["all"][metric], epoch, val
            state = {"epoch": epoch + 1, "model": args.model, "state_dict": engine.unwrap(model).state_dict(),
                     "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "best_metric": best, "best_epoch": best_epoch,
                     "best_val": best_val, "rng": engine.rng_state(), "args": vars(args)}
            if engine.is_main_process():
                if best_epoch == epoch:
                    engine.save_checkpoint(state, best_path)
                engine.save_checkpoint(state, ckpt_path)
            logger.info(f"epoch {epoch}: val {metric} {selected['all'][metric]:.3f} (best {best:.3f} at epoch "
                        f"{best_epoch})")

        best_checkpoint = engine.load_checkpoint(best_path)
        load_model_state(model, best_checkpoint["state_dict"], best_path)
        preds, labels = predict(model, make_loader(test_set, args, False), self.device, args.amp)
        test = shot_metrics(preds, labels, train_labels, args.many_shot_thr, args.low_shot_thr)
        logger.info(f"test of the best checkpoint (epoch {best_epoch})\n" + format_metrics("test", test))
        if args.balanced_metric:
            logger.info(format_metrics("bal.", balanced_shot_metrics(preds, labels, train_labels,
                                                                     args.many_shot_thr, args.low_shot_thr)))
        if engine.is_main_process():
            engine.write_json({"val": best_checkpoint["best_val"], "test": test, "epoch": best_epoch,
                               "args": vars(args)}, run_dir / "results.json")
            np.savez(run_dir / "test_predictions.npz", preds=preds, labels=labels, train_labels=train_labels,
                     many_shot_thr=args.many_shot_thr, low_shot_thr=args.low_shot_thr)
        return {"val": best_checkpoint["best_val"], "test": test, "epoch": best_epoch, "run_dir": str(run_dir)}

    def train_epoch(self, model, objective, optimizer, loader, epoch, logger, ckpt_path) -> dict:
        args = self.args
        model.train()
        meters = {}
        progress = engine.Progress(logger, len(loader), f"epoch {epoch}", args.print_freq)
        for step, batch in enumerate(loader):
            batch = to_device(batch, self.device)
            kept = (f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists()
                    else "no checkpoint was written yet")
            try:
                with autocast(self.device, args.amp):
                    components = objective(model, batch, epoch)
            except ValueError as error:   # the losses refuse non-finite predictions/features
                raise RunError(f"training stopped at epoch {epoch}, step {step}: {error} The model diverged or the "
                               f"data hold non-finite values; {kept} (lower --lr or check the data).") from error
            total = sum(components.values())
            if not bool(torch.isfinite(total)):
                bad = [name for name, value in components.items() if not bool(torch.isfinite(value))]
                raise RunError(f"the {' and '.join(bad) or 'total'} loss became non-finite at epoch {epoch}, step "
                               f"{step}; training stopped and {kept} (lower --lr or check the data).")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            n = batch[0].shape[0]
            for name, value in list(components.items()) + [("total", total)]:
                meters.setdefault(name, engine.AverageMeter()).update(value.item(), n)
            progress.step(step, meters)
        return {name: meter.avg for name, meter in meters.items()}

    @torch.no_grad()
    def statistics_pass(self, model, objective, loader, epoch) -> None:
        """After each epoch ≥ start_update: per-label feature statistics over the training set, model in train
        mode (as the reference: BN batch statistics, augmentation and FDS smoothing on)."""
        args = self.args
        fds = engine.unwrap(model).fds
        surrogate = objective.surrogate if args.srl else None
        if (fds is None and surrogate is None) or epoch < args.start_update:
            return
        model.train()
        encodings, projections, labels = [], [], []
        for images, _, targets, _ in loader:
            targets = targets.to(self.device)
            with autocast(self.device, args.amp):
                out = model(images.to(self.device), targets, epoch)
            encodings.append(out["encoding"].float())
            if surrogate is not None:
                projections.append(out["projection"].float())
            labels.append(targets)
        labels = torch.cat(labels)
        if fds is not None:
            fds.update_last_epoch_stats(epoch)
            fds.update_running_stats(torch.cat(encodings), labels, epoch)
        if surrogate is not None:
            surrogate.update_last_epoch_stats(epoch)
            surrogate.update_running_stats(torch.cat(projections), labels.clamp(max=args.srl_num_labels - 1), epoch)


def load_model_state(model, state_dict, path) -> None:
    try:
        engine.unwrap(model).load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise RunError(f"checkpoint {path} does not fit this model ({first}); pass the flags it was trained with "
                       "(--model, --fds, --srl, ...).") from error


def build_optimizer(args, model, objective):
    """Adam (or SGD) on the trainable model parameters; σ of Balanced MSE in its own group at --sigma_lr, which
    the schedule (× 0.1 at each --schedule milestone) leaves alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params, "name": "model"}]
    if args.bmse and not args.fix_noise_sigma:
        groups.append({"params": [objective.bmse.noise_sigma], "lr": args.sigma_lr, "name": "noise_sigma"})
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=args.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    milestones = sorted(args.schedule)
    decay = lambda epoch: 0.1 ** sum(epoch >= m for m in milestones)
    lambdas = [decay if g["name"] == "model" else (lambda epoch: 1.0) for g in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def main(parser: argparse.ArgumentParser, argv=None) -> dict:
    """Parse, check and run; a :class:`RunError` ends the process with its one sentence (exit status 1)."""
    from common.cli import check_args
    args = check_args(parser, parser.parse_args(argv))
    try:
        run = AgeRun(args)
        return run.evaluate() if args.evaluate else run.train()
    except RunError as error:
        # Raised in a DataLoader worker, the message arrives wrapped in the worker's traceback: keep its sentence.
        sentence = str(error).strip().splitlines()[-1]
        raise SystemExit(f"error: {sentence.split('RunError: ', 1)[-1]}")
