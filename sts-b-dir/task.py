"""STS-B-DIR (sentence-pair similarity, scores 0–5) as a task of the shared trainer.

:class:`STSTask` wires this folder's data (``dataset.py``, ``text.py``), BiLSTM model (``models.py``) and objective
(``loss.py``) from the parsed flags. Labels are binned on ``STSB_BINS`` (fifty 0.1-wide bins, ``np.histogram``'s
rule) for LDS, FDS, SRL slots and the shots (many > 100, few < 30 training samples).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import dataset
import loss
import models
import text
from common import bsam, methods
from common.method import ModelSpec
from common.bins import STSB_BINS, LabelBins
from common.fds import fds_from_args
from common.lds import bucket_prior, prepare_weights
from common.metrics import (CORRELATION_SELECTABLE, correlation_shot_metrics, correlation_table, selection_from_args,
                            uncertainty)
from common.optim import optimizer_from_args
from common.trainer import Task

# Shot thresholds of STS-B-DIR (docs/datasets.md §1.4: they give the reference's hard-coded lists).
SHOT_THRESHOLDS = {"many_shot_thr": 100, "low_shot_thr": 30, "shot_rule": "auto"}
# Flags that define the model; an evaluated checkpoint keeps its own.
MODEL_FLAGS = ("d_word", "d_hid", "n_layers_enc", "n_layers_highway", "dropout", "max_seq_len",
               "max_word_v_size")    # with the methods' (common.methods.model_flags)
DEFAULT_D_WORD = 300        # --glove 0 without --d_word: the reference's size


def label_bins(bucket_num: int) -> LabelBins:
    """The reference's ``np.histogram(y, bucket_num, range=(0, 5))`` grid (STSB_BINS for 50)."""
    return STSB_BINS if bucket_num == 50 else LabelBins(0, 5 / bucket_num, bucket_num, rule="histogram")


def cache_folder(args) -> Path:
    """``--cache_dir``, else ``<data_dir>/cache`` when writable, else the user's cache folder."""
    if args.cache_dir:
        return Path(args.cache_dir)
    data_cache = Path(args.data_dir) / "cache"
    writable = data_cache if data_cache.is_dir() else Path(args.data_dir)
    if os.access(writable, os.W_OK):
        return data_cache
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dir-benchmarks" / "sts-b"


class STSTask(Task):
    """STS-B-DIR on the shared trainer.

    The data, vocabulary and word vectors are read when the task is built, so ``--d_word`` (the vector file's
    dimension unless given) is known before the run's flags are saved; their log lines go to the run's log.
    Texts are tokenised again at every start (a second or two); only the word vectors are cached.
    """

    selection_name = "val mse"
    benchmark = "sts-b-dir"
    model_flags = MODEL_FLAGS
    eval_defaults = SHOT_THRESHOLDS
    # A batch pads its sentences to the longest one: PyTorch's default collate cannot stack them.
    collate_fn = staticmethod(dataset.collate)

    @staticmethod
    def run_name(args) -> str:
        """A run folder name built from the flags (the reference's naming, without a timestamp)."""
        from common.cli import method_tags
        parts = ["sts", f"d{args.d_hid}", args.optimizer, args.loss, f"{args.lr:g}", str(args.batch_size),
                 f"valint{args.val_interval}", f"patience{args.patience}"] + ([] if args.glove else ["noglove"])
        return "_".join(parts + method_tags(args)) + args.suffix

    def __init__(self, args):
        self.args = args
        self.many_shot_thr, self.low_shot_thr = args.many_shot_thr, args.low_shot_thr
        self.selection = selection_from_args(args, "mse", CORRELATION_SELECTABLE)
        self.selection_name = self.selection.name
        self.bins = label_bins(args.bucket_num)
        self.messages = []
        note = self.messages.append
        note(dataset.describe_split(args.data_dir))
        lists = args.shot_rule == "lists" or (args.shot_rule == "auto" and dataset.split_held(args.data_dir) == "ranksim")
        self.shot_bins = dataset.REFERENCE_SHOT_BINS if lists else None
        note("shots: the references' hard-coded 0.1-bin lists (--shot_rule lists)" if lists else
             f"shots: by training pairs per 0.1 bin (many > {self.many_shot_thr}, few < {self.low_shot_thr})")
        self.splits = dataset.load_splits(args.data_dir, args.max_seq_len)
        for name, split in self.splits.items():
            skipped = f", {split.skipped} rows skipped (empty sentence or score)" if split.skipped else ""
            note(f"{name}: {len(split)} pairs from {split.path}{skipped}")
        self.train_labels = self.splits["train"].scores.astype(np.float64)
        self.vocabulary = text.build_vocabulary(self.splits.values(), args.max_word_v_size)
        note(f"vocabulary: {len(self.vocabulary) - 2} words (top {args.max_word_v_size} of train+dev+test, cased) + "
             "padding and unknown")
        self.embeddings = None
        # --resume and --evaluate restore the embedding table from the checkpoint: no vector file is needed.
        if args.glove and not args.resume:
            vectors = text.load_word_vectors(self.vocabulary, args.word_embs_file, cache_folder(args), args.d_word,
                                             note)
            args.d_word = vectors.dim
            self.embeddings = vectors.matrix(args.seed)
        elif args.d_word is None:
            args.d_word = DEFAULT_D_WORD
        if (args.regularization_weight > 0 or args.srl) and (args.batch_size, args.lr) == (128, 1e-4):
            note("note: RankSim and SRL published their STS-B numbers with --batch_size 16 --lr 2.5e-4 --patience 30 "
                 "--max_vals 300 (docs/reproduce.md); this run uses DIR's --batch_size 128 --lr 1e-4")

    # ---- data ----
    def datasets(self) -> dict:
        a = self.args
        for message in self.messages:       # gathered in __init__, before the trainer set self.log
            self.log(message)
        # --reweight/--lds, or BSAM's own 1/√n on the same 0.1-wide bins (bsam.weighting); --lds without --reweight
        # smooths what UVOTE's heads or BNI's prior count, not sample weights.
        rule = bsam.weighting(a)
        weights = prepare_weights(self.train_labels, rule.reweight, rule.lds, a.lds_kernel, a.lds_ks, a.lds_sigma,
                                  bins=self.bins, clip=None, truncate_smoothed_counts=a.lds_truncate,
                                  rescale=rule.rescale)
        if rule.own and not a.evaluate:
            self.log(bsam.weights_note(a, weights))
        make = lambda name, w=None: dataset.PairDataset(self.splits[name], self.vocabulary, w)   # noqa: E731
        return {"train": make("train", weights), "val": make("val"), "test": make("test")}

    # ---- model, objective, optimiser ----
    def build_model(self):
        a = self.args
        # With --vir, VIR's probabilistic smoothing of the pair feature's latent mean and variance.
        fds = fds_from_args(a, 8 * a.d_hid, clip_min=0.5, clip_max=2.0, bins=self.bins, edge_rule="clamp",
                            alias_last_epoch=a.fds_alias_last_epoch, fill_empty=True,
                            skip_invalid_buckets=a.fds_skip_invalid_buckets)
        model = models.build_model(
            len(self.vocabulary), a.d_word, a.d_hid, a.n_layers_enc, a.dropout, a.n_layers_highway,
            embeddings=self.embeddings, train_words=bool(a.train_words) or not a.glove, fds=fds,
            projection_dim=a.embedding_dim if a.srl else None, **methods.head_options(a))
        # The heads see score / 5 (the head start's units).
        scores = getattr(self, "train_labels", None)
        spec = ModelSpec(head=("linear.",), part="pair encoder", fits="this model",
                         flags="--d_hid, --d_word, --n_layers_enc, --max_word_v_size and data",
                         label_mean=None if scores is None else float(scores.mean()) / loss.SCORE_SCALE,
                         label_std=None if scores is None else float(scores.std()) / loss.SCORE_SCALE)
        return methods.prepare_model(a, model, spec, self.log)

    def build_objective(self):
        """``loss.build_objective`` with Balanced MSE's prior from the training scores: GAI's mixture file or
        BNI's bins (in score units; the loss rescales them)."""
        a = self.args
        if a.bmse and a.loss != "mse":
            self.log(f"--bmse replaces the regression loss: --loss {a.loss} is not used (selection stays on val MSE).")
        gmm_file = self._gmm_file() if a.bmse and a.imp == "gai" else None
        prior = None
        if a.bmse and a.imp == "bni":
            prior = bucket_prior(self.train_labels, a.lds, a.lds_kernel, a.lds_ks, a.lds_sigma, bins=self.bins,
                                 truncate=a.lds_truncate)
        return loss.build_objective(a, gmm_file=gmm_file, bni_prior=prior, label_bins=self.bins,
                                    label_counts=self.bins.histogram(self.train_labels),
                                    train_labels=self.train_labels)

    def _gmm_file(self) -> Path:
        """GAI's prior: ``--gmm``, else a mixture fitted here on the training scores / 5 (the loss's scale)."""
        from common.gmm import check_fitted_on, fit_gmm_1d, labels_digest, save_gmm
        digest = labels_digest(self.train_labels)
        if self.args.gmm:
            check_fitted_on(self.args.gmm, digest, "training scores",
                            "drop --gmm, and the run fits one on its own training scores")
            return Path(self.args.gmm)
        # Keyed on the training scores themselves: other data, another file.
        path = cache_folder(self.args) / f"gmm_{digest[:16]}.npz"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_gmm(fit_gmm_1d(self.train_labels / loss.SCORE_SCALE, 8), path, fitted_on=digest)
            self.log(f"GAI prior: an 8-component mixture fitted on the training scores / 5, saved to {path}")
        return path

    def build_optimizer(self, model, objective):
        """Adam with ``--weight_decay`` (L2, the reference's AllenNLP Adam; 1e-5), or SGD; no schedule. Balanced
        MSE's σ has its own group at ``--sigma_lr`` with the same weight decay (inherited, as every reference's σ
        group)."""
        return optimizer_from_args(self.args, model, objective, adam_weight_decay=True, lr_factor=None)

    # ---- prediction, metrics ----
    def data_fingerprint(self) -> dict:
        """The split files' SHA-256 (``{'train_new.tsv': …, 'dev_new.tsv': …, 'test_new.tsv': …}``)."""
        return dataset.split_digests(self.args.data_dir)

    def metrics(self, preds, labels) -> dict:
        """MSE, L1, G-mean, Pearson and Spearman, overall and per shot of the 0.1-wide score bins."""
        return correlation_shot_metrics(preds, labels, self.train_labels, self.many_shot_thr, self.low_shot_thr,
                                        bins=STSB_BINS, shot_bins=self.shot_bins, balanced=True)

    def selection_score(self, preds, labels, metrics) -> float:
        return self.selection.score(metrics)

    def report(self, name, preds, labels, metrics) -> str:
        return correlation_table(name, metrics)

    def summary(self, name, metrics) -> str:
        return correlation_table(name, metrics, balanced=False)

    def baseline_predictions(self, labels):
        return np.full_like(labels, self.train_labels.mean())

    def save_predictions(self, path, preds, labels, sigma=None) -> None:
        """The test predictions with what recomputes their shot metrics: training scores, thresholds, the bins."""
        np.savez(path, preds=preds, labels=labels, train_labels=self.train_labels,
                 many_shot_thr=self.many_shot_thr, low_shot_thr=self.low_shot_thr, bins_start=STSB_BINS.start,
                 bins_width=STSB_BINS.width, bins_num=STSB_BINS.num_bins, bins_rule=STSB_BINS.rule,
                 **uncertainty(sigma))
