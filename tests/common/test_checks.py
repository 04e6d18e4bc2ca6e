"""Issue 27, class A: the API refuses what the command line refuses, with one ValueError naming the argument.

Each case is input that used to give a silent wrong result (a negative loss, labels folded into one bin, shots
from thresholds in the wrong order or from no training labels, NaN uncertainty metrics) or an error that named
another function or no argument at all.
"""
import math

import numpy as np
import pytest
import torch

from common.bins import AGE_BINS, LabelBins
from common.lds import bucket_prior, prepare_weights, smoothed_bin_counts
from common.losses import (SRL, RegressionLoss, laplace_nll, srl_losses, srl_random_points, uvote_weight_table,
                           weighted_focal_l1_loss, weighted_focal_mse_loss, weighted_huber_loss, weighted_l1_loss,
                           weighted_mse_loss)
from common.metrics import (ause, calibration_bins, correlation_shot_metrics, pearson, shot_masks, shot_metrics,
                            spearman, uncertainty_metrics)

PRED = torch.tensor([[1.0], [2.0], [3.0]])
TARGET = torch.tensor([[1.5], [2.5], [2.0]])
NEGATIVE = torch.tensor([1.0, -2.0, 1.0])
TRAIN = np.array([5.0] * 150 + [6.0] * 30 + [7.0] * 3)
TEST_LABELS, TEST_PREDS = np.array([5.0, 6.0, 7.0]), np.array([5.5, 6.5, 6.0])
SIGMA = np.array([0.5, 1.0, 2.0])
SRL_ARGS = (torch.randn(4, 8), torch.tensor([0, 1, 1, 2]), torch.randn(3, 8), srl_random_points(5, 8))


CASES = {
    # negative weights: a negative loss that an optimiser drives to -inf
    "mse weights": (lambda: weighted_mse_loss(PRED, TARGET, NEGATIVE), "weights"),
    "l1 weights": (lambda: weighted_l1_loss(PRED, TARGET, NEGATIVE), "weights"),
    "focal_mse weights": (lambda: weighted_focal_mse_loss(PRED, TARGET, NEGATIVE), "weights"),
    "focal_l1 weights": (lambda: weighted_focal_l1_loss(PRED, TARGET, NEGATIVE), "weights"),
    "huber weights": (lambda: weighted_huber_loss(PRED, TARGET, NEGATIVE), "weights"),
    "RegressionLoss weights": (lambda: RegressionLoss("l1")(PRED, TARGET, NEGATIVE[:, None]), "weights"),
    "per-element weights": (lambda: weighted_l1_loss(PRED, TARGET, -torch.ones(3, 1)), "weights"),
    # the focal factor's β ≤ 0 makes it ≤ 0 (a zero or negative loss); γ < 0 makes it infinite at a zero error
    "focal beta": (lambda: weighted_focal_l1_loss(PRED, TARGET, beta=-0.2), "beta"),
    "focal beta 0": (lambda: weighted_focal_mse_loss(PRED, TARGET, beta=0.0), "beta"),
    "focal gamma": (lambda: weighted_focal_l1_loss(PRED, TARGET, gamma=-1), "gamma"),
    "RegressionLoss beta": (lambda: RegressionLoss("focal_l1", beta=-1.0), "beta"),
    "RegressionLoss unknown keyword": (lambda: RegressionLoss("l1", beta=1.0), "beta"),
    # SRL's β weighs a variance: a negative one rewards spread neighbour cosines
    "srl homogeneity_beta": (lambda: srl_losses(*SRL_ARGS, homogeneity_beta=-0.1), "homogeneity_beta"),
    "SRL homogeneity_beta": (lambda: SRL(3, 8, n_points=5, homogeneity_beta=-1.0), "homogeneity_beta"),
    # UVOTE's clip bounds in the wrong order: np.clip would give every bin the upper bound (uniform weights)
    "uvote clip": (lambda: uvote_weight_table([1, 50, 900], 3, clip=(1000, 5)), "clip"),
    "laplace weights": (lambda: laplace_nll(torch.zeros(3), torch.zeros(3), torch.ones(3), NEGATIVE), "weights"),
    # prepare_weights without `bins`: one integer bin per label below max_target
    "labels above max_target": (lambda: prepare_weights([3.0, 40.0, 130.0], "inverse"), "max_target"),
    "float labels without bins": (lambda: prepare_weights([0.2, 0.45, 0.7], "sqrt_inv"), "bins"),
    "max_target 0": (lambda: prepare_weights([0.0, 1.0], "inverse", max_target=0), "max_target"),
    "prepare_weights clip": (lambda: prepare_weights([1.0, 2.0], "inverse", clip=(1000, 5)), "clip"),
    "prepare_weights negative clip": (lambda: prepare_weights([1.0, 2.0], "inverse", clip=(-1, 5)), "clip"),
    "smoothed_bin_counts reweight": (lambda: smoothed_bin_counts([1, 2, 3], "inverted"), "reweight"),
    "smoothed_bin_counts counts": (lambda: smoothed_bin_counts([1, -2, 3], "inverse"), "counts"),
    "smoothed_bin_counts empty": (lambda: smoothed_bin_counts([], "sqrt_inv"), "counts"),
    "bucket_prior empty": (lambda: bucket_prior([], False, "gaussian", 5, 2), "train_labels"),
    # shots: thresholds in the wrong order, negative, or no training histogram
    "many below few": (lambda: shot_metrics(TEST_PREDS, TEST_LABELS, TRAIN, 10, 20), "many_shot_thr"),
    "negative few": (lambda: shot_metrics(TEST_PREDS, TEST_LABELS, TRAIN, 100, -1), "low_shot_thr"),
    "nan many": (lambda: shot_metrics(TEST_PREDS, TEST_LABELS, TRAIN, math.nan, 20), "many_shot_thr"),
    "empty training labels": (lambda: shot_metrics(TEST_PREDS, TEST_LABELS, []), "train_labels"),
    "empty training labels, bins": (lambda: shot_metrics(TEST_PREDS, TEST_LABELS, [], bins=AGE_BINS),
                                    "train_labels"),
    "shot_masks order": (lambda: shot_masks(np.array([1, 50]), 10, 20), "many_shot_thr"),
    "correlation order": (lambda: correlation_shot_metrics(TEST_PREDS, TEST_LABELS, TRAIN, 10, 30), "many_shot_thr"),
    "correlation empty training": (lambda: correlation_shot_metrics(TEST_PREDS, TEST_LABELS, []), "train_labels"),
    "correlation shot_bins without bins": (lambda: correlation_shot_metrics(
        TEST_PREDS, TEST_LABELS, TRAIN, shot_bins={"many": [5], "medium": [6], "few": [7]}), "bins"),
    # predicted standard deviations must be > 0
    "uncertainty sigma 0": (lambda: uncertainty_metrics(TEST_PREDS, TEST_LABELS, [0.5, 0.0, 1.0]), "sigma"),
    "uncertainty sigma < 0": (lambda: uncertainty_metrics(TEST_PREDS, TEST_LABELS, -SIGMA), "sigma"),
    "uncertainty sigma length": (lambda: uncertainty_metrics(TEST_PREDS, TEST_LABELS, SIGMA[:2]), "sigma"),
    "calibration sigma < 0": (lambda: calibration_bins(TEST_PREDS, TEST_LABELS, -SIGMA), "sigma"),
    "calibration num_bins": (lambda: calibration_bins(TEST_PREDS, TEST_LABELS, SIGMA, num_bins=0), "num_bins"),
    "ause steps": (lambda: ause(TEST_PREDS, TEST_LABELS, SIGMA, steps=0), "steps"),
    "ause lengths": (lambda: ause(TEST_PREDS, TEST_LABELS, SIGMA[:2]), "sigma"),
    "ause empty": (lambda: ause([], [], []), "preds"),
    "pearson lengths": (lambda: pearson([1.0, 2.0, 3.0], [1.0, 2.0]), "y"),
    "spearman lengths": (lambda: spearman([1.0, 2.0, 3.0], [1.0, 2.0]), "y"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_api_input_is_one_value_error_naming_the_argument(case):
    call, argument = CASES[case]
    with pytest.raises(ValueError) as raised:
        call()
    message = str(raised.value)
    assert f"`{argument}`" in message, message
    assert len(message.splitlines()) == 1 and message.endswith("."), message


def test_the_function_named_is_the_one_called():
    # `sigma` with inf used to be reported as "shot_metrics: `sigma` …" by uncertainty_metrics
    with pytest.raises(ValueError, match=r"^uncertainty_metrics: `sigma`"):
        uncertainty_metrics(TEST_PREDS, TEST_LABELS, [1.0, math.inf, 1.0])
    with pytest.raises(ValueError, match=r"^pearson: `x`"):
        pearson([1.0, math.nan], [1.0, 2.0])


def test_what_was_accepted_stays_accepted():
    # zero weights, equal thresholds, labels folded by an explicit grid (IMDB-WIKI's ages above 120 on AGE_BINS)
    assert float(weighted_l1_loss(PRED, TARGET, torch.zeros(3))) == 0.0
    assert float(weighted_l1_loss(PRED, TARGET, torch.tensor([2, 0, 1]))) == pytest.approx(2 / 3)   # integer weights
    assert float(RegressionLoss("focal_l1", beta=0.2, gamma=0)(PRED, TARGET)) == pytest.approx(2 / 3)
    out = shot_metrics(TEST_PREDS, TEST_LABELS, TRAIN, 30, 30)
    assert [out[s]["count"] for s in ("many", "medium", "few")] == [1, 1, 1]
    folded = prepare_weights([30.0, 130.0, 186.0, 120.0], "inverse", bins=AGE_BINS, clip=None)
    assert folded[1] == folded[2] == folded[3] and folded[0] == pytest.approx(3 * folded[1])
    exact = prepare_weights([3.0, 4.0, 4.0], "inverse", max_target=5, clip=None)
    np.testing.assert_allclose(exact, [1.5, 0.75, 0.75])
    fine = prepare_weights([0.2, 0.45, 0.7], "inverse", bins=LabelBins(0, 0.25, 4), clip=None)
    np.testing.assert_allclose(fine, [1.0, 1.0, 1.0])
    metrics = uncertainty_metrics(TEST_PREDS, TEST_LABELS, SIGMA)
    assert metrics["mean_sigma"] == pytest.approx(7 / 6) and math.isfinite(metrics["nll"])


def test_value_checks_are_off_only_inside_values_unchecked():
    """The training step turns the checks that read values off (the loop records the loss's health instead); shape
    checks stay on, and the switch is restored after an exception."""
    from common.checks import check_finite, check_non_negative, check_ndim, values_unchecked
    from common.errors import NonFiniteError
    nan, negative = torch.tensor([1.0, float("nan")]), torch.tensor([1.0, -1.0])
    with values_unchecked():
        check_finite("f", "x", nan)
        check_non_negative("f", "w", negative)
        with pytest.raises(ValueError, match="must be 2-D"):
            check_ndim("f", "x", nan, (2,))
    with pytest.raises(RuntimeError):
        with values_unchecked():
            raise RuntimeError
    with pytest.raises(NonFiniteError):
        check_finite("f", "x", nan)
    with pytest.raises(ValueError, match="must be ≥ 0"):
        check_non_negative("f", "w", negative)
