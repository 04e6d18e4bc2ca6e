"""The age augmentation (common.age.AgeAugment) against torchvision's transform chain of the references.

Both draw from torch's global generator; with the same seed they must give the same tensors bit for bit, and
leave the generator in the same state (so everything drawn after an image is unchanged too).
"""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from common.age import AgeAugment, decode_resized


def torchvision_chain(img_size: int, train: bool):
    """The references' chain, written from their code's description (docs/methods.md, age data)."""
    steps = [transforms.Resize((img_size, img_size))]
    if train:
        padding = max(1, round(16 * img_size / 224))
        steps += [transforms.RandomCrop(img_size, padding=padding), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    return transforms.Compose(steps)


def photo(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


@pytest.mark.parametrize("img_size", [32, 64, 224])
@pytest.mark.parametrize("train", [True, False])
def test_equals_torchvision_bit_for_bit(img_size, train):
    ours, theirs = AgeAugment(img_size, train), torchvision_chain(img_size, train)
    # non-square, smaller, larger, already the right size, and a grayscale photo
    images = [photo(0, 250, 190), photo(1, img_size // 2 + 3, img_size), photo(2, 3 * img_size, 2 * img_size),
              photo(3, img_size, img_size), photo(4, 120, 160, "L")]
    for seed, image in enumerate(images * 8):      # 40 draws: both flips and many crop offsets
        torch.manual_seed(seed)
        expected = theirs(image.convert("RGB"))
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        got = ours(decode_resized(image, img_size))
        assert got.dtype == expected.dtype == torch.float32 and got.shape == (3, img_size, img_size)
        assert torch.equal(got, expected)
        assert torch.equal(torch.get_rng_state(), state)


def test_every_crop_offset_and_flip_matches():
    """Each of the (2p + 1)² corners, flipped and not, against torchvision's functional crop of the padded image."""
    img_size = 32
    ours = AgeAugment(img_size, True)
    pad = ours.padding
    image = photo(5, img_size, img_size)
    padded = transforms.functional.pad(image, pad, fill=0)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    seen = set()
    for seed in range(400):
        torch.manual_seed(seed)
        row, col = (int(torch.randint(0, 2 * pad + 1, (1,))) for _ in range(2))
        flip = bool(torch.rand(1) < 0.5)
        seen.add((row, col, flip))
        crop = transforms.functional.crop(padded, row, col, img_size, img_size)
        expected = to_tensor(transforms.functional.hflip(crop) if flip else crop)
        torch.manual_seed(seed)
        assert torch.equal(ours(np.asarray(image)), expected), (row, col, flip)
    assert len(seen) == 2 * (2 * pad + 1) ** 2      # every offset and both flips were checked


def test_values_span_minus_one_to_one():
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    values = AgeAugment(16, False)(ramp)[0].flatten()
    assert values[0] == -1.0 and values[255] == 1.0 and bool(torch.all(values.diff() > 0))


def test_wrong_size_is_one_sentence():
    with pytest.raises(ValueError, match=r"expected a \(32, 32, 3\) array, got \(30, 32, 3\)"):
        AgeAugment(32, True)(np.zeros((30, 32, 3), np.uint8))


def test_swap_val_test_selects_on_the_test_split_and_says_so(tmp_path):
    """``--swap_val_test`` (Group-DIR's AgeDB split order): the 'val' split is the CSV's test rows and 'test' its
    val rows, with a warning line; off, the roles are the CSV's."""
    from common import cli
    from common.synthetic import write_synthetic
    from folders import folder_module
    write_synthetic("agedb", tmp_path, n=60, img_size=8, seed=1)
    task_module = folder_module("agedb-dir", "task")
    frame = __import__("pandas").read_csv(tmp_path / "agedb.csv")
    for swap in (False, True):
        args = cli.parse(cli.build_age_parser("t", dataset="agedb"),
                         ["--data_dir", str(tmp_path), "--img_size", "8"] + (["--swap_val_test"] if swap else []))
        lines = []
        task = task_module.AgeDBTask(args)
        task.log = lines.append
        splits = task.datasets()
        for role, source in (("val", "test" if swap else "val"), ("test", "val" if swap else "test")):
            assert splits[role].paths == frame.loc[frame["split"] == source, "path"].tolist()
        assert any("--swap_val_test" in line and "not test numbers" in line for line in lines) == swap
# -- RnC's augmentation (docs/methods.md §11.1) ---------------------------------------------------------------
def _rnc_rest(channels_first):
    """Flip, colour jitter (p 0.8) and grayscale (p 0.2) of RnC's augmentation, then [-1, 1]."""
    from torchvision.transforms import v2
    rest = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                       v2.RandomGrayscale(p=0.2)])
    return rest(channels_first).float().div(255).sub_(0.5).div_(0.5)


def test_rnc_augment_of_the_resized_image_is_the_earlier_chain():
    """``from_original=False`` (and a pack's arrays): the earlier views, draw for draw."""
    from torchvision.transforms import v2
    from common.age import RnCAugment
    chain = v2.Compose([v2.RandomResizedCrop(16, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)])
    pixels = decode_resized(photo(5, 40, 30), 16)
    for seed in range(12):
        torch.manual_seed(seed)
        expected = chain(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))
        expected = expected.float().div(255).sub_(0.5).div_(0.5)
        torch.manual_seed(seed)
        assert torch.equal(RnCAugment(16, from_original=False)(pixels), expected)


def test_rnc_augment_crops_the_original_image():
    """A PIL image at its own size: the crop box drawn on the original (20–100 % of its area, aspect 3/4–4/3)
    and resized to S by PIL, then the rest of the chain; not the crop of the resized image."""
    from torchvision.transforms import RandomResizedCrop
    from common.age import RnCAugment
    original = photo(6, 120, 90)
    differs = 0
    for seed in range(8):
        torch.manual_seed(seed)
        top, left, height, width = RandomResizedCrop.get_params(original, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
        crop = original.crop((left, top, left + width, top + height)).resize((16, 16), Image.BILINEAR)
        expected = _rnc_rest(torch.from_numpy(np.ascontiguousarray(np.asarray(crop).transpose(2, 0, 1))))
        torch.manual_seed(seed)
        got = RnCAugment(16)(original)
        assert got.shape == (3, 16, 16) and torch.equal(got, expected)
        torch.manual_seed(seed)
        differs += not torch.allclose(got, RnCAugment(16)(decode_resized(original, 16)), atol=2 / 255 + 1e-6)
    assert differs >= 6


def test_age_dataset_gives_the_original_to_a_transform_that_crops_it(tmp_path):
    from common.age import AgeDataset, read_split_csv
    from common.synthetic import write_synthetic
    write_synthetic("agedb", tmp_path, n=24, img_size=20, seed=0)
    frame = read_split_csv(tmp_path / "agedb.csv", 200)
    seen = []

    class Record:
        def __init__(self, from_original):
            self.from_original = from_original

        def __call__(self, image):
            seen.append((self.from_original, image.size if isinstance(image, Image.Image) else image.shape))
            return torch.zeros(3, 8, 8)

    for views, train in ((Record(True), None), (Record(False), Record(True))):
        seen.clear()
        data = AgeDataset(frame, tmp_path, "train", 8, conr_views=True, view_transform=views, train_transform=train)
        data[0]
        original = Image.open(tmp_path / data.paths[0]).size
        want_views = original if views.from_original else (8, 8, 3)
        assert [size for _, size in seen[:2]] == [want_views] * 2
        if train is not None:
            assert seen[2] == (True, original)              # RnC's linear stage: the main input too
        else:
            assert isinstance(data.transform, AgeAugment)
    val = AgeDataset(frame, tmp_path, "val", 8, train_transform=Record(True))
    assert isinstance(val.transform, AgeAugment)          # evaluation keeps the references' transform
