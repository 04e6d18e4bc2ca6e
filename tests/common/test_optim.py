"""The optimiser builder (common/optim.py): the methods' own groups and the schedule they follow."""
import argparse
import math

import pytest

from common import methods
from common.models.resnet import ResNetRegressor
from common.optim import build_optimizer, cosine_decay


# -- optimiser, frozen probe, flags -------------------------------------------------------------------------------
def test_log_sigma_heads_train_at_a_tenth_of_the_learning_rate_on_the_same_schedule():
    model = ResNetRegressor("resnet18", width=4, head="uvote")
    args = argparse.Namespace(uvote=True, uvote_var_lr=0.1, lr=1e-3)
    optimizer, scheduler = build_optimizer(model, lr=1e-3, groups=methods.param_groups(args, model, None),
                                           lr_factor=lambda e: 0.5 ** e)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["log_sigma"]["lr"] == pytest.approx(1e-4) and len(groups["log_sigma"]["params"]) == 2
    named = dict(model.named_parameters())
    assert {id(p) for p in groups["log_sigma"]["params"]} == {id(named["linear.log_sigma.weight"]),
                                                             id(named["linear.log_sigma.bias"])}
    optimizer.step()
    scheduler.step()
    assert groups["log_sigma"]["lr"] == pytest.approx(5e-5) and groups["model"]["lr"] == pytest.approx(5e-4)


def test_cosine_schedule_is_the_authors_formula_epoch_by_epoch_and_ends_at_a_thousandth():
    """RnC's and BSAM's η_e = η_min + (η − η_min)(1 + cos(πe/E))/2, η_min = η·10⁻³, e = 1..E, through LambdaLR
    stepped once per epoch, as the loop does."""
    model = ResNetRegressor("resnet18", width=4)
    epochs, lr = 7, 0.2
    optimizer, scheduler = build_optimizer(model, name="sgd", lr=lr, lr_factor=cosine_decay(epochs))
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    eta_min = lr * 1e-3
    expected = [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(1, epochs + 1)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[-1] == pytest.approx(eta_min, rel=1e-12) and seen[0] < lr
    with pytest.raises(ValueError, match="epochs"):
        cosine_decay(0)


def test_the_age_benchmarks_build_the_cosine_schedule_from_the_flag_and_the_step_one_by_default():
    from common import cli
    from common.age import AgeTask
    parser = cli.build_age_parser("age", dataset="agedb")
    task = AgeTask.__new__(AgeTask)          # only its optimiser: no data
    lrs = {}
    for schedule in ("step", "cosine"):
        task.args = parser.parse_args(["--lr_schedule", schedule, "--epoch", "4", "--lr", "0.5", "--schedule", "1"])
        optimizer, scheduler = task.build_optimizer(ResNetRegressor("resnet18", width=4), None)
        optimizer.step()
        scheduler.step()
        lrs[schedule] = optimizer.param_groups[0]["lr"]
    assert lrs["step"] == pytest.approx(0.05)                                        # × 0.1 at epoch 1
    assert lrs["cosine"] == pytest.approx(0.5 * (1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * 2 / 4)) / 2))
    assert parser.parse_args([]).lr_schedule == "step"
