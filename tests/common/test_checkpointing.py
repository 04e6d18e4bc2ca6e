"""Checkpoint helpers (common/checkpointing.py): RRT's frozen trunk computes its evaluation features."""
import torch

from common import checkpointing
from common.models.resnet import ResNetRegressor


def test_the_frozen_trunk_of_the_linear_stage_computes_its_evaluation_features():
    torch.manual_seed(0)
    model = ResNetRegressor("resnet18", width=4, stem="cifar")
    x = torch.randn(8, 3, 16, 16)
    model.train()
    model(x)                                            # some running statistics first
    checkpointing.train_only(model, "linear.", frozen_in_eval=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    evaluation = model(x)["encoding"]
    model.train()
    training = model(x)["encoding"]
    assert torch.equal(training, evaluation)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
