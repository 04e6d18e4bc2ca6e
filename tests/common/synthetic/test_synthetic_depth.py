"""Synthetic NYUD2-DIR (common/synthetic/depth.py): the DenseDepth layout, the depth images' modes, the test mask."""
import numpy as np
from PIL import Image

from folders import folder_module
from test_nyud2 import data_dir  # noqa: F401  (the synthetic NYUD2 folder, written once: a fixture)

dataset = folder_module("nyud2-dir", "dataset")


def test_synthetic_layout(data_dir):
    train = dataset.read_pairs(data_dir / "nyu2_train.csv", data_dir)
    test = dataset.read_pairs(data_dir / "nyu2_test.csv", data_dir)
    assert len(train) == 32 and len(test) == 6
    assert (data_dir / "nyu2_train.csv").read_text().startswith("data/nyu2_train/")
    with Image.open(train[0][1]) as depth:
        assert depth.mode == "L"
    with Image.open(test[0][1]) as depth:
        assert depth.mode in ("I;16", "I")
    mask = np.load(data_dir / "test_balanced_mask.npy")
    assert mask.shape == (6, 32, 44) and mask.dtype == np.uint8 and mask.sum() > 0
