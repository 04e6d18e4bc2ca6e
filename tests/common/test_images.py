"""Images of every mode PIL opens become the RGB a user expects (issue 27): a 16-bit grayscale PNG is scaled by its
bit depth, not clipped to white, on every path that decodes images (the age datasets, the HDF5 pack, NYUD2's
image loader); alpha is composited onto white; a mode of unknown range is one sentence naming the file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common.age import decode_resized
from common.errors import RunError
from common.images import to_rgb

LEVELS = np.array([[0, 257, 4369, 13107], [26214, 32768, 52428, 65535]] * 2, dtype=np.uint16)    # 4 × 4


def sixteen_bit_png(path):
    Image.fromarray(LEVELS).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"                      # what PIL makes of it: the case that became white
    return path


def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    path = sixteen_bit_png(tmp_path / "gray16.png")
    with Image.open(path) as image:
        pixels = decode_resized(image, 4)               # the age pipeline (and the pack): no resize at 4 px
    expected = np.round(LEVELS / 65535 * 255)
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 4, 3)
    assert (pixels == expected[..., None]).all()        # proportional to the 16-bit values, the same on R, G, B
    assert pixels[:2, :, 0].tolist() == [[0, 1, 17, 51], [102, 128, 204, 255]]


def test_alpha_is_composited_onto_white_and_other_modes_follow_pil(tmp_path):
    rgba = Image.fromarray(np.array([[[200, 0, 0, 0], [200, 0, 0, 255], [200, 0, 0, 128]]], dtype=np.uint8), "RGBA")
    assert np.asarray(to_rgb(rgba)).tolist() == [[[255, 255, 255], [200, 0, 0], [227, 127, 127]]]
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), "LA")
    assert np.asarray(to_rgb(la)).tolist() == [[[255, 255, 255], [10, 10, 10]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 40, 80, 120] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [40, 80, 120]]]
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    assert np.asarray(to_rgb(cmyk)).tolist() == [[[255, 0, 0]]]
    gray = Image.new("L", (1, 1), 77)
    assert np.asarray(to_rgb(gray)).tolist() == [[[77, 77, 77]]]


def test_a_mode_of_unknown_range_is_one_sentence_naming_the_file(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.array([[0.5, 2.0]], dtype=np.float32)).save(path)
    with Image.open(path) as image, pytest.raises(RunError) as info:
        decode_resized(image, 2)
    assert str(info.value).startswith(f"image {path} is 'F' (floating-point values of no fixed range)")
    signed = Image.fromarray(np.array([[-5, 3]], dtype=np.int32))
    with pytest.raises(RunError, match="image x.png is 'I' .*of unknown bit depth"):
        to_rgb(signed, "x.png")


@pytest.mark.slow
def test_the_pack_and_the_age_dataset_read_16_bit_images_alike(tmp_path):
    from common.tools import pack
    import h5py
    (tmp_path / "images").mkdir()
    sixteen_bit_png(tmp_path / "images" / "a.png")
    Image.new("RGB", (4, 4), (9, 8, 7)).save(tmp_path / "images" / "b.png")
    pd.DataFrame({"path": ["images/a.png", "images/b.png"], "age": [30, 40],
                  "split": ["train", "test"]}).to_csv(tmp_path / "agedb.csv", index=False)
    out = pack.main(["agedb", "--data_dir", str(tmp_path), "--img_size", "2"])
    with h5py.File(out, "r") as handle:
        packed = handle["images"][0]
    gray = Image.fromarray(np.round(LEVELS / 65535 * 255).astype(np.uint8), "L").convert("RGB")
    assert np.array_equal(packed, np.asarray(gray.resize((2, 2), Image.BILINEAR)))    # 4 × 4 shrunk to 2 × 2
    assert packed.max() > 100 and packed.min() < 100
    with Image.open(tmp_path / "images" / "a.png") as image:
        assert np.array_equal(packed, decode_resized(image, 2))


def test_nyud2_reads_a_16_bit_rgb_image_as_scaled_gray(tmp_path):
    import importlib.util
    from pathlib import Path
    folder = Path(__file__).resolve().parents[2] / "nyud2-dir"
    spec = importlib.util.spec_from_file_location("nyud2_dataset_for_modes", folder / "dataset.py")
    dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dataset)
    image = sixteen_bit_png(tmp_path / "rgb.png")
    Image.fromarray(np.full((4, 4), 100, dtype=np.uint8), "L").save(tmp_path / "depth.png")
    rgb, _ = dataset.load_pair(image, tmp_path / "depth.png", test=False)
    assert np.asarray(rgb)[:2, :, 1].tolist() == [[0, 1, 17, 51], [102, 128, 204, 255]]
