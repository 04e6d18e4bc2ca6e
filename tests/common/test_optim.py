"""The optimiser builder (common/optim.py): the methods' own groups and the schedule they follow."""
import argparse
import pytest

from common import methods
from common.models.resnet import ResNetRegressor
from common.optim import build_optimizer


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
