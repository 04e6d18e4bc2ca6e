"""NYUD2-DIR as a task of the shared trainer: the flags become this folder's data, model and objective.

``NYUD2Task(args)`` reads the parsed command line once and builds every part from explicit values: the splits
(training scenes minus a validation hold-out, the FDS subset, the masked test set), the training pixel
histogram (computed once and cached, or the references' table), the per-pixel weights and the shot bins, the
encoder–decoder with FDS, and the objective. Predictions are compared on the evaluated pixels after the
references' bilinear upsampling (``align_corners=True``) to the test resolution.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F

import dataset
import loss
import resnet
from common.bins import DEPTH_BINS
from common.depth import DEPTH_SELECTABLE, depth_metrics, depth_table, pixel_bucket_weights, shot_bins
from common.errors import RunError
from common.fds import fds_from_args
from common.gmm import check_fitted_on, gmm_path, labels_digest
from common.metrics import selection_from_args, uncertainty
from common import bsam, methods
from common.method import ModelSpec
from common.optim import optimizer_from_args
from common.trainer import Task


# Flags that define the model; an evaluated checkpoint keeps its own.
MODEL_FLAGS = ("encoder", "scale", "crop")    # with the methods' (common.methods.model_flags)
# What RRT re-initialises and trains (--rrt_head R, the references'): the head R and SRL's projector on R's features.
RRT_HEAD = ("R.", "projector.")


class NYUD2Task(Task):
    benchmark = "nyud2-dir"
    model_flags = MODEL_FLAGS

    @staticmethod
    def run_name(args) -> str:
        from common.cli import method_tags
        tags = method_tags(args)
        if args.retrain_fc and args.rrt_head != "R":      # the two RRT variants get different folders
            tags = [f"rrt_{args.rrt_head}" if tag == "rrt" else tag for tag in tags]
        return "_".join(["nyud2", args.encoder, f"{args.lr:g}", str(args.batch_size), *tags])

    def __init__(self, args):
        self.args = args
        self.crop = tuple(args.crop)
        self.selection = selection_from_args(args, "rmse", DEPTH_SELECTABLE, "test" if args.select_on_test else "val")
        self.selection_name = self.selection.name
        self.pixel_counts = self.shots = None
        self.restored_counts = None     # an evaluated checkpoint's training pixel histogram (restore_extras)

    # ---- what an evaluated checkpoint carries ----
    def checkpoint_extras(self) -> dict:
        """The training pixel histogram the run was weighted and reported with, (100,) ints: the shot bins of an
        evaluation then come from it, without the 50,688 training files."""
        return {"train_pixel_counts": [int(n) for n in self.pixel_counts]}

    def restore_extras(self, state: dict) -> None:
        if "train_pixel_counts" in state:
            self.restored_counts = np.asarray(state["train_pixel_counts"], dtype=np.int64)

    # ---- data ----
    def training_pixel_counts(self, data_dir: Path):
        """``(counts, pairs)``: the (100,) training pixel histogram and the training pairs, read and checked only
        when something needs them (training always; an evaluation only when its checkpoint holds no histogram
        and the references' table is not asked for; then ``pairs`` is None)."""
        a, train_csv, pairs = self.args, data_dir / "nyu2_train.csv", None
        if a.evaluate and self.restored_counts is not None:
            self.log("training pixel histogram: the one stored in the checkpoint (the run's own)")
            return self.restored_counts, None
        if not (a.evaluate and a.pixel_histogram == "reference"):
            pairs = dataset.read_pairs(train_csv, data_dir)
            dataset.check_pairs_exist(pairs, train_csv)
        if a.pixel_histogram == "reference":
            self.log("training pixel histogram: the references' table")
            return dataset.REFERENCE_TRAIN_PIXELS.copy(), pairs
        counts = dataset.cached_pixel_histogram(data_dir, pairs, a.scale, self.crop, self.log)
        problems = dataset.check_reference_histogram(counts)
        self.log("training pixel histogram: computed from the data, " + (
            "equal to the references' table" if not problems else f"not the references' ({problems[0]})"))
        return counts, pairs

    def datasets(self) -> dict:
        """The training, validation, test and FDS-subset splits; with ``--evaluate`` the test split alone."""
        a, data_dir = self.args, Path(self.args.data_dir)
        counts, pairs = self.training_pixel_counts(data_dir)
        if counts[a.bucket_start] <= 0:
            raise RunError(f"no training pixel lies in bin {a.bucket_start} ({a.bucket_start / 10:g}–"
                           f"{(a.bucket_start + 1) / 10:g} m); re-weighting and FDS need it: check the depth data.")
        self.pixel_counts = counts
        total = counts.sum()
        self.shots = shot_bins(counts, a.many_shot_fraction * total, a.low_shot_fraction * total)

        test_csv = data_dir / "nyu2_test.csv"
        test_pairs = dataset.read_pairs(test_csv, data_dir)
        dataset.check_pairs_exist(test_pairs, test_csv)
        packed = lambda name: dataset.PairPack(data_dir, name, a.scale) if a.data_format == "hdf5" else None
        test_pack = packed("nyu2_test")       # a missing pack, or one of another --scale, is said first
        # Synthetic data at the real --scale/--crop would fail on the mask's shape: name the values that fit.
        dataset.check_synthetic_geometry(data_dir, a.scale, self.crop)
        mask = dataset.load_test_mask(data_dir, len(test_pairs), self.crop)
        subset_csv = data_dir / "nyu2_train_FDS_subset.csv"
        make = lambda pairs, mode, **kw: dataset.NYUD2Dataset(pairs, mode, a.scale, self.crop, **kw)
        test = make(test_pairs, "test", mask=mask, pack=test_pack)
        dataset.check_test_pixels(test, data_dir)
        if a.evaluate:
            return {"test": test}
        # --reweight/--lds, or BSAM's own 1/√n of the pixel counts (bsam.weighting); --lds without --reweight smooths
        # what UVOTE's heads or BNI's prior count, not pixel weights.
        rule = bsam.weighting(a)
        weights = pixel_bucket_weights(counts, rule.reweight, rule.lds, a.lds_kernel, a.lds_ks, a.lds_sigma,
                                       a.bucket_start, truncate=a.lds_truncate, rescale=rule.rescale)
        if rule.own:
            self.log(bsam.weights_note(a, weights, counts))
        if a.select_on_test:
            train_pairs, val = pairs, test
            self.log("model selection: on the TEST set (--select_on_test), as the references")
        else:
            if a.data_format == "hdf5":
                raise RunError("--data_format hdf5 packs whole CSVs: pass --select_on_test with it, or read the "
                               "image files (the validation scenes are carved from nyu2_train.csv).")
            train_pairs, val_pairs = dataset.split_validation_scenes(pairs, a.val_fraction)
            if not val_pairs:
                raise RunError(f"--val_fraction {a.val_fraction} holds out no scene; raise it or pass "
                               "--select_on_test.")
            val = make(val_pairs, "val")
            self.log(f"model selection: on {len(val_pairs)} images of held-out training scenes "
                     f"(--val_fraction {a.val_fraction}); --select_on_test selects on the test set as the references")
        splits = {"train": make(train_pairs, "train", bucket_weights=weights, pack=packed("nyu2_train")), "val": val,
                  "test": test}
        if (a.fds or a.srl) and subset_csv.is_file():
            subset = dataset.read_pairs(subset_csv, data_dir)
            dataset.check_pairs_exist(subset, subset_csv)
            splits["stats"] = make(subset, "stats", pack=packed("nyu2_train_FDS_subset"))
        elif a.fds or a.srl:
            raise RunError(f"{subset_csv} does not exist; FDS collects its statistics on that subset: fetch it with "
                           "`python data/preprocess_nyud2.py`.")
        return splits

    # ---- model, objective, optimiser ----
    def build_model(self):
        a = self.args
        # With --vir, VIR's probabilistic smoothing of the per-pixel latent mean and variance.
        fds = fds_from_args(a, resnet.feature_dim(a.encoder), clip_min=0.2, clip_max=5.0, bins=DEPTH_BINS,
                            edge_rule="clamp", alias_last_epoch=a.fds_alias_last_epoch,
                            skip_invalid_buckets=a.fds_skip_invalid_buckets)
        model = resnet.build_model(a.encoder, fds=fds, projection_dim=a.embedding_dim if a.srl else None,
                                   pretrained_encoder="none" if (a.resume or a.pretrained) else a.pretrained_encoder,
                                   log=self.log, **methods.head_options(a))
        if a.retrain_fc and a.rrt_head == "R":
            # The references' RRT: the checkpoint's E, D and MFF, frozen; R as just built (fresh weights and FDS
            # statistics), all of it trained. SRL's projector reads R's features, so it is new and trained too.
            spec = ModelSpec(head=RRT_HEAD, part="encoder, decoder and MFF", fits=f"--encoder {a.encoder}",
                             flags="--encoder and --srl")
        else:
            # --pretrained alone, or --rrt_head conv2: every tensor of the checkpoint, R included; --retrain_fc
            # then trains the last layer of the encoder-decoder only.
            spec = ModelSpec(head=(), retrained=("R.conv2.",), part="model", fits=f"--encoder {a.encoder}",
                             flags="--encoder")
        if self.pixel_counts is not None:
            # The head start's statistics: the training pixels' depths, from their histogram's bin centres.
            counts = np.asarray(self.pixel_counts, dtype=np.float64)
            centres = DEPTH_BINS.lower_edges() + DEPTH_BINS.width / 2
            spec.label_mean = float((counts * centres).sum() / counts.sum())
            spec.label_std = float(np.sqrt((counts * (centres - spec.label_mean) ** 2).sum() / counts.sum()))
        methods.prepare_model(a, model, spec, self.log)
        if a.retrain_fc and a.rrt_head == "R":
            trained = [name for name, p in model.named_parameters() if p.requires_grad]
            self.log(f"RRT: R re-initialised and trained ({len(trained)} tensors), E, D and MFF frozen (the "
                     "references'; --rrt_head conv2 keeps the checkpoint's R and trains its last convolution)")
        return model

    def build_objective(self):
        a = self.args
        gmm_file = prior = None
        if a.bmse and a.imp == "gai":
            gmm_file = gmm_path(a.gmm, a.data_dir)
            check_fitted_on(gmm_file, labels_digest(self.pixel_counts), "training pixel histogram",
                            f"re-create it with `python data/preprocess_gmm.py --data_dir {a.data_dir}`")
        if a.bmse and a.imp == "bni":
            prior = dataset.bni_prior(self.pixel_counts, a.reweight, a.lds, a.lds_kernel, a.lds_ks, a.lds_sigma,
                                      a.bucket_start, truncate=a.lds_truncate)
        return loss.build_objective(a, gmm_file=gmm_file, bni_prior=prior, pixel_counts=self.pixel_counts)

    def build_optimizer(self, model, objective):
        """Adam with ``--weight_decay``, as the references (or SGD with ``--optimizer sgd``); lr × 0.1 every 5
        epochs; Balanced MSE's σ at --sigma_lr, unscheduled, with the same weight decay (its group inherits the
        optimiser's, as in the references)."""
        return optimizer_from_args(self.args, model, objective, adam_weight_decay=True,
                                   lr_factor=lambda epoch: 0.1 ** (epoch // 5))

    # ---- prediction, metrics ----
    def data_fingerprint(self) -> dict:
        """The SHA-256 of the test list (and, when present, the training list)."""
        from common.runtime import sha256_of
        data_dir = Path(self.args.data_dir)
        return {name: sha256_of(data_dir / name) for name in ("nyu2_train.csv", "nyu2_test.csv")
                if (data_dir / name).is_file()}

    def predict(self, model, batch):
        """The evaluated pixels' depths, labels and, from UVOTE and VIR, standard deviations (upsampled alike)."""
        target, mask = batch["target"], batch["mask"]
        out = model(batch["input"])
        upsample = lambda x: F.interpolate(x.float(), size=target.shape[2:], mode="bilinear",  # noqa: E731
                                           align_corners=True)
        if "sigma" in out:
            return upsample(out["pred"])[mask], target[mask], upsample(out["sigma"])[mask]
        return upsample(out["pred"])[mask], target[mask]

    def metrics(self, preds, labels) -> dict:
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = depth_metrics(preds, labels, self.shots, pixel_counts=self.pixel_counts)
        for warning in caught:
            self.log(f"warning: {warning.message}")
        return metrics

    def selection_score(self, preds, labels, metrics) -> float:
        return self.selection.score(metrics)

    def format_metrics(self, name, metrics) -> str:
        return depth_table(name, metrics)

    def summary(self, name, metrics) -> str:
        return depth_table(name, metrics, balanced=False)

    def baseline_predictions(self, labels):
        centres = DEPTH_BINS.lower_edges() + DEPTH_BINS.width / 2
        return np.full_like(labels, float((centres * self.pixel_counts).sum() / self.pixel_counts.sum()))

    def save_predictions(self, path, preds, labels, sigma=None) -> None:
        np.savez(path, preds=preds.astype(np.float32), labels=labels.astype(np.float32),
                 train_pixel_counts=self.pixel_counts, many_bins=self.shots["many"],
                 medium_bins=self.shots["medium"], few_bins=self.shots["few"], **uncertainty(sigma))
