"""The NYUD2-DIR data: RGB images with depth maps in the DenseDepth layout the benchmark uses (docs/datasets.md §1.3).

``--data_dir`` is the ``data/`` folder of that layout:

* ``nyu2_train/<scene>_out/<n>.jpg`` (RGB) + ``<n>.png`` (depth, **8-bit**: metres = value / 255 × 10);
* ``nyu2_test/<5 digits>_colors.png`` + ``<5 digits>_depth.png`` (depth, **16-bit** millimetres);
* ``nyu2_train.csv``, ``nyu2_test.csv``, ``nyu2_train_FDS_subset.csv``: headerless ``image,depth`` path pairs
  that start with ``data/`` (the first component is dropped and the rest resolved under ``--data_dir``);
* ``test_balanced_mask.npy``: (654, 228, 304) uint8, the evaluated test pixels (same count in every 0.1-m bin
  from 0.7 m on).

Transforms (the references'): Scale to a shorter side of 240, then for training a horizontal flip, a ±5° rotation,
the centre crop 304×228 with the depth resized to 152×114, PCA lighting noise, colour jitter and ImageNet
normalisation; the FDS subset and the test skip the augmentation, and the test keeps its depth at 304×228.
``scale`` and ``crop`` are parameters so that small synthetic images work too.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from common.bins import DEPTH_BINS
from common.errors import RunError
from common.images import to_rgb
from common.runtime import HDF5Pack
from common.textfiles import not_utf8, other_separator

# Training pixels per 0.1-m bin of the real NYUD2-DIR training set (50,688 un-augmented 304×228 crops), the
# table the references hard-code; `python data/preprocess_nyud2.py --check_histogram` compares it with the
# histogram computed from a user's data.
REFERENCE_TRAIN_PIXELS = np.array([
    0, 0, 0, 0, 0, 0, 0, 25848691, 24732940, 53324326, 69112955, 54455432, 95637682, 71403954, 117244217,
    84813007, 126524456, 84486706, 133130272, 95464874, 146051415, 146133612, 96561379, 138366677, 89680276,
    127689043, 81608990, 119121178, 74360607, 106839384, 97595765, 66718296, 90661239, 53103021, 83340912,
    51365604, 71262770, 42243737, 65860580, 38415940, 53647559, 54038467, 28335524, 41485143, 32106001,
    35936734, 23966211, 32018765, 19297203, 31503743, 21681574, 16363187, 25743420, 12769509, 17675327,
    13147819, 15798560, 9547180, 14933200, 9663019, 12887283, 11803562, 7656609, 11515700, 7756306, 9046228,
    5114894, 8653419, 6859433, 8001904, 6430700, 3305839, 6318461, 3486268, 5621065, 4030498, 3839488, 3220208,
    4483027, 2555777, 4685983, 3145082, 2951048, 2762369, 2367581, 2546089, 2343867, 2481579, 1722140, 3018892,
    2325197, 1952354, 2047038, 1858707, 2052729, 1348558, 2487278, 1314198, 3338550, 1132666], dtype=np.int64)

# Shot thresholds as fractions of all training pixels: on the table above they give exactly the references'
# hard-coded bin lists (many: 9–45, 47, 49; medium: 7, 8, 46, 48, 50–56, 58, 60, 61, 63; few: the rest).
MANY_SHOT_FRACTION, LOW_SHOT_FRACTION = 0.0077, 0.003
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
HISTOGRAM_CACHE = "nyu2_train_pixel_histogram.json"
TEST_MASK = "test_balanced_mask.npy"
# Written by `python -m common.synthetic nyud2` (common/synthetic/depth.py): the --scale and --crop its mask is for.
SYNTHETIC_MARKER = "SYNTHETIC_nyud2.json"


# -- files ------------------------------------------------------------------------------------------------------
def read_pairs(csv_path, data_dir) -> list[tuple[Path, Path]]:
    """``(image, depth)`` paths of a two-column CSV, resolved under ``data_dir``.

    The lists are headerless; a first row that names no files (``image,depth``: no path under ``data/``) is a
    header and is skipped, as is a UTF-8 byte-order mark. A later row whose cell is not such a path, another
    separator than commas, or bytes that are not UTF-8 are one sentence naming the row or the byte."""
    csv_path, data_dir = Path(csv_path), Path(data_dir)
    if not csv_path.is_file():
        raise RunError(f"{csv_path} does not exist; point --data_dir at the data/ folder of the NYUD2 layout "
                       "(see data/download_nyud2.py) or write a synthetic one with `python -m common.synthetic nyud2`.")
    try:
        frame = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(csv_path, "path list") from None
    except Exception as error:  # noqa: BLE001 - any parser error means the same thing to the user
        cause = " ".join(str(error).split())
        raise RunError(f"{csv_path} could not be parsed ({cause}); it must hold `image,depth` path pairs.") from error
    if frame.shape[1] != 2:
        other = other_separator([frame.iloc[0, 0]]) if frame.shape[1] == 1 and len(frame) else None
        separated = f" (its first row {frame.iloc[0, 0]!r} is separated by {other}, not commas)" if other else ""
        raise RunError(f"{csv_path} has {frame.shape[1]} column(s){separated}; it must hold two, the image path and "
                       "the depth path, separated by a comma.")
    cells = [(image.strip(), depth.strip()) for image, depth in frame.itertuples(index=False)]
    # A file under data/ has at least two path components (data/nyu2_train/…): a header's words have one.
    is_path = lambda cell: len(Path(cell).parts) >= 2     # noqa: E731
    if cells and not any(map(is_path, cells[0])):
        cells = cells[1:]                                  # a header row such as image,depth
        first_row = 2
    else:
        first_row = 1
    for row, pair in enumerate(cells, start=first_row):   # the file line
        for cell in pair:
            if not is_path(cell):
                raise RunError(f"{csv_path}, line {row}: {cell!r} is not a file path under data/ (the rows are "
                               "`data/nyu2_train/<scene>_out/<n>.jpg,data/nyu2_train/<scene>_out/<n>.png` pairs); "
                               "fix or delete that row.")
    resolve = lambda name: data_dir.joinpath(*Path(name).parts[1:])     # noqa: E731
    return [(resolve(image), resolve(depth)) for image, depth in cells]


def check_pairs_exist(pairs, csv_path) -> None:
    for row, (image, depth) in enumerate(pairs):
        for path in (image, depth):
            if not path.is_file():
                raise RunError(f"{csv_path}, row {row + 1}: {path} does not exist; check --data_dir (the data/ "
                               "folder holding nyu2_train/ and nyu2_test/) or re-create the CSV.")


def load_pair(image_path: Path, depth_path: Path, test: bool) -> tuple[Image.Image, Image.Image]:
    """The RGB image and the depth PNG, checked: 8-bit training depth, 16-bit test depth, equal sizes."""
    try:
        with Image.open(image_path) as image:
            image = to_rgb(image, image_path)     # 16-bit or alpha images as a user sees them, not clipped
        with Image.open(depth_path) as depth:
            depth.load()
    except OSError as error:
        raise RunError(f"{image_path} or {depth_path} could not be read ({error}); re-download it.") from error
    if test and depth.mode not in ("I;16", "I;16B", "I"):
        raise RunError(f"test depth {depth_path} is {depth.mode!r}; the test split needs 16-bit PNGs in millimetres.")
    if not test and depth.mode != "L":
        raise RunError(f"training depth {depth_path} is {depth.mode!r}; the training split needs 8-bit PNGs "
                       "(value / 255 × 10 m).")
    if image.size != depth.size:
        raise RunError(f"{image_path} is {image.size[0]}×{image.size[1]} but its depth {depth_path} is "
                       f"{depth.size[0]}×{depth.size[1]}; image and depth must have the same size.")
    return image, depth


# -- transforms (applied to the image and the depth together) ------------------------------------------------------
def scale(image, depth, shorter_side: int):
    """Resize so the shorter side is ``shorter_side``: the image bilinearly, the depth by nearest neighbour."""
    w, h = image.size
    size = (shorter_side * w // h, shorter_side) if w >= h else (shorter_side, shorter_side * h // w)
    return image.resize(size, Image.BILINEAR), depth.resize(size, Image.NEAREST)


def rotate(image, depth, degrees: float):
    """Rotate both by ``degrees`` (spline order 2, same size, zero fill), as the references' RandomRotate."""
    out = []
    for picture in (image, depth):
        array = np.asarray(picture, dtype=np.float32)
        rotated = ndimage.rotate(array, degrees, reshape=False, order=2, mode="constant", cval=0.0)
        out.append(Image.fromarray(np.clip(np.rint(rotated), 0, 255).astype(np.uint8)))
    return out[0], out[1]


def centre_crop(image, depth, crop: tuple[int, int], depth_size: tuple[int, int]):
    """Crop both to ``crop`` (W, H) around the centre; resize the depth to ``depth_size`` (W, H) if it differs."""
    w, h = image.size
    left, top = int(round((w - crop[0]) / 2.0)), int(round((h - crop[1]) / 2.0))
    box = (left, top, left + crop[0], top + crop[1])
    image, depth = image.crop(box), depth.crop(box)
    if depth_size != crop:
        depth = depth.resize(depth_size, Image.BICUBIC)
    return image, depth


def depth_tensor(depth: Image.Image, test: bool) -> torch.Tensor:
    """(1, H, W) float32 metres: 16-bit millimetres / 1000 (test), 8-bit value / 255 × 10 (training)."""
    array = np.asarray(depth, dtype=np.float32)
    metres = array / 1000.0 if test else array / 255.0 * 10.0
    return torch.from_numpy(np.ascontiguousarray(metres, dtype=np.float32))[None]


def lighting(image: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """AlexNet-style PCA lighting noise on a (3, H, W) image in [0, 1]."""
    alpha = torch.randn(3) * std
    return image + (PCA_EIGVEC @ (alpha * PCA_EIGVAL))[:, None, None]


def colour_jitter(image: torch.Tensor, strength: float = 0.4) -> torch.Tensor:
    """Brightness, contrast and saturation jitter (each a blend with a factor in 1 ± strength), random order."""
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    for step in torch.randperm(3).tolist():
        factor = 1 + (torch.rand(()) * 2 - 1) * strength
        if step == 0:
            image = image * factor
        elif step == 1:
            image = (image - grey.mean()) * factor + grey.mean()
        else:
            image = (image - grey) * factor + grey
        grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    return image


def normalise(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


def image_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


# -- the data set ------------------------------------------------------------------------------------------------
class NYUD2Dataset(Dataset):
    """One split; each sample a dict.

    ``input``: (3, H, W) normalised image at the crop size; ``target``: (1, h, w) depth in metres (half the crop
    for ``train``/``stats``, the crop itself for ``test``/``val``); ``weight``: (1, h, w) pixel weights
    (re-weighting/LDS, training only; else ones); ``mask``: (1, h, w) bool evaluated pixels (``test``/``val``).

    Args:
        pairs: ``(image, depth)`` paths; mode: ``'train'`` (augmented), ``'stats'`` (FDS subset), ``'test'``
            (16-bit depth, the balanced mask), ``'val'`` (held-out training scenes: 8-bit depth, every pixel
            from 0.7 m on evaluated).
        bucket_weights: (100,) per-bin pixel weights, or None.
        mask: (N, H, W) evaluated pixels of the test split.
    """

    def __init__(self, pairs, mode: str, scale_to: int = 240, crop=(304, 228), bucket_weights=None, mask=None,
                 pack=None):
        self.pairs, self.mode, self.scale_to, self.crop = list(pairs), mode, scale_to, tuple(crop)
        self.pack = pack            # a PairPack of these pairs (already scaled), or None: the image files
        self.depth_size = self.crop if mode in ("test", "val") else (self.crop[0] // 2, self.crop[1] // 2)
        self.bucket_weights = None if bucket_weights is None else torch.as_tensor(bucket_weights, dtype=torch.float32)
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image_path, depth_path = self.pairs[index]
        if self.pack is not None:
            image, depth = self.pack[index]
        else:
            image, depth = load_pair(image_path, depth_path, test=self.mode == "test")
        image, depth = scale(image, depth, self.scale_to)      # the identity for packed pairs
        if image.size[0] < self.crop[0] or image.size[1] < self.crop[1]:
            raise RunError(f"{image_path} is {image.size[0]}×{image.size[1]} after scaling to {self.scale_to}, "
                           "smaller "
                           f"than the crop {self.crop[0]}×{self.crop[1]}; pass a smaller --crop or a larger --scale.")
        if self.mode == "train":
            if torch.rand(()) < 0.5:
                image, depth = image.transpose(Image.FLIP_LEFT_RIGHT), depth.transpose(Image.FLIP_LEFT_RIGHT)
            image, depth = rotate(image, depth, float(torch.rand(()) * 10 - 5))
        image, depth = centre_crop(image, depth, self.crop, self.depth_size)
        picture, metres = image_tensor(image), depth_tensor(depth, test=self.mode == "test")
        if self.mode == "train":
            picture = colour_jitter(lighting(picture))
        sample = {"input": normalise(picture), "target": metres}
        weights = self.bucket_weights
        sample["weight"] = (weights[DEPTH_BINS.index(metres)] if weights is not None else torch.ones_like(metres))
        if self.mode == "test":
            sample["mask"] = self.mask[index][None] & (metres > 0)
        elif self.mode == "val":
            sample["mask"] = metres >= 0.7
        return sample


def scene_of(image_path: Path) -> str:
    return image_path.parent.name


def split_validation_scenes(pairs, fraction: float, seed: int = 0):
    """Hold out ``fraction`` of the training scenes (at least one) for validation: (train pairs, val pairs)."""
    scenes = sorted({scene_of(image) for image, _ in pairs})
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(scenes)))) if fraction > 0 else 0
    held = set(rng.choice(scenes, size=min(count, len(scenes) - 1), replace=False).tolist()) if count else set()
    return ([p for p in pairs if scene_of(p[0]) not in held], [p for p in pairs if scene_of(p[0]) in held])


def load_test_mask(data_dir, n_test: int, crop) -> np.ndarray:
    """(N, H, W) bool: the evaluated test pixels, checked against the split and the crop; a mask that selects
    nothing is refused (every metric would be over no pixel)."""
    path = Path(data_dir) / TEST_MASK
    if not path.is_file():
        raise RunError(f"{path} does not exist; fetch it (or re-create it) with `python data/preprocess_nyud2.py`.")
    try:
        mask = np.load(path)
    except (OSError, ValueError) as error:
        raise RunError(f"{path} could not be read ({error}); re-create it with data/preprocess_nyud2.py.") from error
    expected = (n_test, crop[1], crop[0])
    if mask.shape != expected:
        raise RunError(f"{path} has shape {mask.shape}, but the test split has {n_test} images cropped to "
                       f"{crop[0]}×{crop[1]}: expected {expected}; re-create it with data/preprocess_nyud2.py.")
    if not mask.any():
        raise RunError(f"{path} is all zeros: it selects no test pixel, so every test metric would be over no pixel; "
                       "delete it and fetch the published mask with `python data/preprocess_nyud2.py` (or recompute "
                       "one with `--make_mask`).")
    return mask.astype(bool)


def check_test_pixels(test: "NYUD2Dataset", data_dir) -> None:
    """Refuse a test split whose depth is 0 (no measurement) at every pixel the mask selects: no pixel would be
    evaluated. Reads test images only up to the first one with an evaluated pixel (normally the first)."""
    for index in np.flatnonzero(test.mask.flatten(1).any(1).numpy()):
        if bool(test[int(index)]["mask"].any()):
            return
    data_dir = Path(data_dir)
    raise RunError(f"the test depth maps listed in {data_dir / 'nyu2_test.csv'} are 0 (no depth) at every pixel "
                   f"{data_dir / TEST_MASK} selects, so every test metric would be over no pixel: check that they are "
                   "the 16-bit millimetre maps of the test split, or recompute the mask for them with `python "
                   "data/preprocess_nyud2.py --make_mask`.")


def check_synthetic_geometry(data_dir, scale_to: int, crop) -> None:
    """Refuse ``--scale``/``--crop`` other than those a synthetic data folder was written for (its test mask
    covers exactly that crop), naming the values to pass. Real data (no marker file) are not checked here."""
    path = Path(data_dir) / SYNTHETIC_MARKER
    if not path.is_file():
        return
    try:
        written = json.loads(path.read_text())
        size, want_scale, want_crop = written["size"], int(written["scale"]), [int(v) for v in written["crop"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path} could not be read ({error}); write the synthetic data again with `python -m "
                       "common.synthetic nyud2`.") from error
    if scale_to != want_scale or list(crop) != want_crop:
        raise RunError(f"{data_dir} holds synthetic NYUD2 images of {size[0]}×{size[1]} whose test mask covers the "
                       f"centre {want_crop[0]}×{want_crop[1]} ({path.name}): pass --scale {want_scale} --crop "
                       f"{want_crop[0]} {want_crop[1]} (this run has --scale {scale_to} --crop {crop[0]} {crop[1]}).")


# -- the training pixel histogram ------------------------------------------------------------------------------------
def pixel_histogram(pairs, scale_to: int = 240, crop=(304, 228)) -> np.ndarray:
    """(100,) int64 training pixels per 0.1-m bin over the un-augmented crops at full resolution."""
    counts = np.zeros(DEPTH_BINS.num_bins, dtype=np.int64)
    for image_path, depth_path in pairs:
        image, depth = load_pair(image_path, depth_path, test=False)
        image, depth = centre_crop(*scale(image, depth, scale_to), crop, crop)
        counts += DEPTH_BINS.histogram(depth_tensor(depth, test=False).numpy())
    return counts


def cached_pixel_histogram(data_dir, pairs, scale_to: int, crop, log=print) -> np.ndarray:
    """The training pixel histogram, computed once and cached in ``<data_dir>/nyu2_train_pixel_histogram.json``,
    keyed on what it is derived from: every depth file's path, size and modification time, the scale and the
    crop. A changed split or a rewritten depth map recomputes it."""
    listing = hashlib.sha256()
    for _, depth_path in pairs:
        stat = depth_path.stat()
        listing.update(f"{depth_path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    key = {"images": len(pairs), "depth_files_sha256": listing.hexdigest(), "scale": scale_to, "crop": list(crop)}
    path = Path(data_dir) / HISTOGRAM_CACHE
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return np.asarray(cached["counts"], dtype=np.int64)
        except (ValueError, KeyError):
            pass
    log(f"computing the training pixel histogram over {len(pairs)} images (once; cached in {path})")
    counts = pixel_histogram(pairs, scale_to, crop)
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"key": key, "counts": counts.tolist()}))
        tmp.replace(path)
    except OSError as error:
        log(f"could not cache the histogram in {path} ({error}); it will be recomputed next time")
    return counts


def check_reference_histogram(counts) -> list[str]:
    """Differences between a computed training histogram and the references' table (empty: identical)."""
    counts = np.asarray(counts, dtype=np.int64)
    problems = []
    if counts.sum() != REFERENCE_TRAIN_PIXELS.sum():
        problems.append(f"total {counts.sum():,} pixels, the reference table {REFERENCE_TRAIN_PIXELS.sum():,}")
    differing = np.flatnonzero(counts != REFERENCE_TRAIN_PIXELS)
    if differing.size:
        b = int(differing[0])
        problems.append(f"{differing.size} bins differ, e.g. bin {b}: {counts[b]:,} against "
                        f"{REFERENCE_TRAIN_PIXELS[b]:,}")
    return problems


def bni_prior(pixel_counts, reweight: str, lds: bool, kernel: str, ks: int, sigma: float, bucket_start: int = 7,
              truncate: bool = False):
    """BNI's bucket prior on depth: ``(centres, weights)``, each (100,) float64: the centres 0.05 + 0.1·b and the
    effective training pixels per bin, normalised, by the recipe of the pixel weights
    (:func:`common.depth.effective_bin_counts`: square roots for ``sqrt_inv``, LDS, ``truncate``)."""
    from common.depth import effective_bin_counts
    counts = effective_bin_counts(pixel_counts, reweight == "sqrt_inv", lds, kernel, ks, sigma, bucket_start,
                                  truncate)
    centres = DEPTH_BINS.lower_edges() + DEPTH_BINS.width / 2
    return centres, counts / counts.sum()


def pixels_per_gmm_sample(total_pixels: int) -> int:
    """The references fit the GAI mixture on bin centres repeated count // 10⁶ times (3,644 samples on the real
    data, whose 3.5·10⁹ pixels grow to 3.6·10⁹ when bins 0–6 take bin 7's count); smaller data sets get a unit
    that keeps about 3,500 samples."""
    return 1_000_000 if total_pixels >= 1_000_000_000 else max(1, math.ceil(total_pixels / 3513))


# -- the HDF5 pack (--data_format hdf5) -------------------------------------------------------------------------------
PACK_SPLITS = ("nyu2_train", "nyu2_test", "nyu2_train_FDS_subset")


def pack_path(data_dir, scale_to: int) -> Path:
    return Path(data_dir) / f"nyu2_pairs_{scale_to}.h5"


def write_pack(data_dir, scale_to: int = 240, log=print) -> Path:
    """Every pair of the three CSVs, checked, decoded and scaled (RGB uint8; depth uint8 for training, uint16 for
    test, as in the PNGs), into ``<data_dir>/nyu2_pairs_<scale>.h5``, one group per CSV with its SHA-256.

    Written as a temporary file beside it and renamed when complete (an earlier pack stays intact until then); a
    disk without room for it (its size estimated from each CSV's first pair) is refused before writing, and a disk
    that fills while writing is one sentence (:func:`common.runtime.write_atomic`), never a half-written pack."""
    import h5py
    from common.runtime import sha256_of, write_atomic
    data_dir = Path(data_dir)
    out = pack_path(data_dir, scale_to)
    splits = []
    for name in PACK_SPLITS:
        csv = data_dir / f"{name}.csv"
        if csv.is_file():
            pairs = read_pairs(csv, data_dir)
            check_pairs_exist(pairs, csv)
            splits.append((name, csv, pairs))
    needed = 2 ** 20
    for name, _, pairs in splits:
        if pairs:
            image, depth = scale(*load_pair(*pairs[0], name == "nyu2_test"), scale_to)
            needed += len(pairs) * (np.asarray(image).nbytes + np.asarray(depth).size * (2 if name == "nyu2_test"
                                                                                         else 1) + 128)

    def write(tmp):
        with h5py.File(tmp, "w") as handle:
            handle.attrs["scale"] = scale_to
            for name, csv, pairs in splits:
                test = name == "nyu2_test"
                images, depths = [], []
                for image_path, depth_path in pairs:
                    image, depth = scale(*load_pair(image_path, depth_path, test), scale_to)
                    images.append(np.asarray(image))
                    depths.append(np.asarray(depth))
                if len({a.shape for a in images}) > 1:
                    raise RunError(f"the images of {csv} differ in size after scaling; they cannot share one pack.")
                group = handle.create_group(name)
                group.create_dataset("images", data=np.stack(images), chunks=(1, *images[0].shape))
                group.create_dataset("depths", data=np.stack(depths).astype(np.uint16 if test else np.uint8),
                                     chunks=(1, *depths[0].shape))
                group.attrs["csv_sha256"] = sha256_of(csv)
                log(f"packed {len(pairs)} pairs of {csv.name}")

    command = f"python data/pack_nyud2.py --data_dir {data_dir} --scale {scale_to}"
    write_atomic(out, write, needed=needed, advice=f"free space on that disk, then run `{command}` again (or train "
                 "without --data_format hdf5)")
    return out


class PairPack(HDF5Pack):
    """Scaled image/depth pairs of one CSV from the pack (:class:`common.runtime.HDF5Pack`: a group per CSV),
    checked against the CSV; the pack is of one ``--scale``."""

    def __init__(self, data_dir, name: str, scale_to: int):
        super().__init__(pack_path(data_dir, scale_to), f"python data/pack_nyud2.py --data_dir {data_dir} --scale "
                         f"{scale_to}", Path(data_dir) / f"{name}.csv", group=name)

    def __getitem__(self, index: int):
        image, depth = self.read(lambda group: (group["images"][index], group["depths"][index]))
        return Image.fromarray(image), Image.fromarray(depth)
