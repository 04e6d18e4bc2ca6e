"""The MLP regressor (common/models/mlp.py): the DIR model interface on vectors, FDS in training only."""
import torch

from common.fds import FDS
from common.models.mlp import MLPRegressor


def test_the_mlp_calibrates_its_encoding_with_fds_in_training_from_start_smooth_only():
    torch.manual_seed(0)
    fds = FDS(8, bucket_num=10, bucket_start=0, ks=3, sigma=1, start_smooth=1)
    fds.smoothed_mean_last_epoch.fill_(2.0)           # v1 = v2 = 1, m1 = 0: calibration adds 2 to every feature
    fds.refresh_calibration()
    model = MLPRegressor(5, hidden=8, fds=fds).train()
    x, y = torch.randn(4, 5), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    raw = model.body(x)
    fds.set_epoch(0)
    assert torch.equal(model(x, y)["encoding"], raw)                     # before start_smooth
    fds.set_epoch(1)
    out = model(x, y)
    torch.testing.assert_close(out["encoding"], raw + 2.0)
    torch.testing.assert_close(out["pred"], model.head(raw + 2.0))
    assert torch.equal(model(x, y, smooth=False)["encoding"], raw)       # the views' pass
    assert torch.equal(model.eval()(x, y)["encoding"], raw)               # evaluation
    assert out["pred"].shape == (4, 1)
