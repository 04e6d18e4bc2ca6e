"""Checkpoints in the reference repositories' format (nn.DataParallel, `FDS.*` buffers) evaluate here.

The key names and shapes come from ../shared/data/agedb-dir/reference_checkpoint_keys.json (a released AgeDB-DIR
ResNet-50 trained with --fds); the test builds a synthetic state dict from them and skips without the file.
"""
import json

import pytest
import torch

from common import checkpointing
from common.fds import FDS, adapt_fds_state
from common.models.resnet import ResNetRegressor
from common.synthetic import write_synthetic
from folders import ROOT, folder_main

KEYS = ROOT.parent / "shared" / "data" / "agedb-dir" / "reference_checkpoint_keys.json"
needs_keys = pytest.mark.skipif(not KEYS.is_file(), reason="../shared/data/agedb-dir/reference_checkpoint_keys.json "
                                                           "is absent")
DTYPES = {"torch.float32": torch.float32, "torch.int64": torch.int64}


def reference_checkpoint(seed=0) -> dict:
    """A checkpoint dict as the reference age scripts save it, with random values of the listed shapes."""
    spec = json.loads(KEYS.read_text())
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype in spec["keys"]:
        dtype = DTYPES[dtype]
        state[name] = (torch.randn(shape, generator=g) * 0.05).to(dtype) if dtype.is_floating_point else \
            torch.zeros(shape, dtype=dtype)
        if name.endswith("running_var") and "FDS" not in name:
            state[name] = torch.rand(shape, generator=g) + 0.5
    return {"epoch": 90, "model": "resnet50", "best_loss": 7.5, "state_dict": state}


@needs_keys
@pytest.mark.parametrize("with_fds", [True, False])
def test_reference_state_maps_onto_our_resnet50(with_fds, tmp_path):
    checkpoint = reference_checkpoint()
    path = tmp_path / "ref.pth.tar"
    torch.save(checkpoint, path)
    state = checkpointing.load_checkpoint(path)["state_dict"]               # weights_only=True, `module.` stripped
    model = ResNetRegressor("resnet50", fds=FDS(2048, 100, 3) if with_fds else None)
    logged = []
    model.load_state_dict(adapt_fds_state(state, model, logged.append))   # strict: every trunk tensor fits
    reference = checkpoint["state_dict"]
    assert torch.equal(model.conv1.weight, reference["module.conv1.weight"])
    assert torch.equal(model.linear.weight, reference["module.linear.weight"])
    if with_fds:
        assert torch.equal(model.fds.running_mean, reference["module.FDS.running_mean"])
        assert torch.equal(model.fds.smoothed_var_last_epoch, reference["module.FDS.smoothed_var_last_epoch"])
        assert model.fds.kernel_window.shape == (5,) and not logged       # our own window, nothing dropped
    else:
        assert len(logged) == 1 and "8 tensors" in logged[0]


@needs_keys
def test_fds_buckets_of_another_shape_are_dropped_with_a_line():
    state = checkpointing.strip_module_prefix(reference_checkpoint()["state_dict"])
    model = ResNetRegressor("resnet50", fds=FDS(2048, 100, 0))        # 100 buckets, the checkpoint has 97
    logged = []
    model.load_state_dict(adapt_fds_state(state, model, logged.append))
    assert len(logged) == 1 and "--bucket_num/--bucket_start" in logged[0]
    assert torch.equal(model.fds.running_mean, torch.zeros(100, 2048))


@needs_keys
@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--fds"], []])
def test_evaluate_a_reference_checkpoint_end_to_end(flags, tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic("agedb", data, n=100, img_size=32, seed=0)
    path = tmp_path / "ref" / "ckpt.best.pth.tar"
    path.parent.mkdir()
    torch.save(reference_checkpoint(), path)
    metrics = folder_main("agedb-dir")(["--evaluate", "--resume", str(path), "--data_dir", str(data), "--workers",
                                        "0", "--img_size", "32", "--batch_size", "50", *flags])
    assert metrics["all"]["count"] == len([l for l in (data / "agedb.csv").read_text().splitlines()
                                           if l.endswith(",test")])
    saved = json.loads((path.parent / "eval.json").read_text())
    assert saved["test"] == json.loads(json.dumps(metrics))


@needs_keys
@pytest.mark.slow
def test_rrt_from_a_reference_checkpoint(tmp_path):
    """--retrain_fc --pretrained REFERENCE: the trunk is the reference's, only `linear` trains."""
    data = tmp_path / "data"
    write_synthetic("agedb", data, n=100, img_size=32, seed=0)
    path = tmp_path / "ref.pth.tar"
    checkpoint = reference_checkpoint()
    torch.save(checkpoint, path)
    folder_main("agedb-dir")(["--retrain_fc", "--pretrained", str(path), "--reweight", "sqrt_inv", "--fds",
                              "--data_dir", str(data), "--store_root", str(tmp_path), "--store_name", "rrt",
                              "--workers", "0", "--img_size", "32", "--batch_size", "50", "--epoch", "1"])
    trained = torch.load(tmp_path / "rrt" / "ckpt.pth.tar", weights_only=True)["state_dict"]
    reference = checkpoint["state_dict"]
    assert torch.equal(trained["layer3.2.conv2.weight"], reference["module.layer3.2.conv2.weight"])
    assert not torch.equal(trained["linear.weight"], reference["module.linear.weight"])
