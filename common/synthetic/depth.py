"""A synthetic NYUD2-DIR in the real on-disk layout (``python -m common.synthetic nyud2 --out DIR``).

Indoor-like scenes rendered from a depth map: a floor receding to a back wall at a long-tailed distance (most
walls 2–4 m away, a tail to 9.9 m, as in NYU Depth V2), and boxes closer to the camera. Colour carries depth:
each surface has its own palette, shaded darker and hazier with distance, with a texture whose scale shrinks
with distance, so a small network can learn it. Written as the DenseDepth layout of docs/datasets.md §1.3:

* ``nyu2_train/<scene>_out/<n>.jpg`` + ``<n>.png`` (8-bit depth, value / 255 × 10 m), several views per scene;
* ``nyu2_test/<5 digits>_colors.png`` + ``_depth.png`` (16-bit millimetres);
* ``nyu2_train.csv``, ``nyu2_test.csv``, ``nyu2_train_FDS_subset.csv`` (headerless, paths starting ``data/``);
* ``test_balanced_mask.npy`` over the centre ``crop`` of the test depths (images are written with their
  shorter side already at the loader's ``--scale``, so that crop is what the loader evaluates);
* ``SYNTHETIC_nyud2.json``: a marker saying the data are fake, with the image ``size``, the ``scale`` and ``crop``
  the mask is for (``nyud2-dir/train.py`` refuses other ``--scale``/``--crop`` values, naming these) and the
  arguments that wrote it.
"""
from __future__ import annotations

import json

import numpy as np
from pathlib import Path
from PIL import Image

from common.depth import balanced_mask

ROOMS = ("bedroom", "kitchen", "living_room", "office", "bathroom", "classroom", "bookstore", "dining_room")


def _depth_map(rng, width: int, height: int, wall: float) -> np.ndarray:
    """(H, W) float32 metres: floor below a horizon, a tilted back wall at ``wall`` metres, 0–2 boxes."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.35, 0.6)
    tilt = rng.uniform(-0.25, 0.25)
    back = wall * (1 + tilt * (x / width - 0.5))
    floor = 1.4 * height / np.maximum(y - horizon, 1e-3) * rng.uniform(0.25, 0.45)
    depth = np.where(y > horizon, np.minimum(floor, back), back)
    for _ in range(rng.integers(0, 3)):
        w, h = rng.integers(width // 6, width // 2), rng.integers(height // 6, height // 2)
        left, top = rng.integers(0, width - w), rng.integers(int(horizon) // 2, height - h)
        near = rng.uniform(0.6, max(0.7, 0.8 * wall))
        depth[top:top + h, left:left + w] = np.minimum(depth[top:top + h, left:left + w], near)
    return np.clip(depth, 0.45, 9.98).astype(np.float32)


def _render(rng, depth: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours from the depth: surface colour, distance shading and haze, distance-scaled texture."""
    height, width = depth.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    surface = np.digitize(depth, [1.0, 2.0, 3.5, 5.5]) % len(palette)
    base = palette[surface]
    shade = (1.0 / (1.0 + 0.18 * depth))[..., None]
    haze = (1 - np.exp(-depth / 6.0))[..., None]
    frequency = 2.5 / np.maximum(depth, 0.5)
    texture = 0.08 * np.sin(frequency * x + rng.uniform(0, 6)) * np.cos(frequency * y)
    colour = base * shade * (1 - haze) + 0.55 * haze + texture[..., None] + rng.normal(0, 0.02, (height, width, 3))
    return (np.clip(colour, 0, 1) * 255).round().astype(np.uint8)


def _wall_distance(rng) -> float:
    """Long-tailed: most rooms 2–4 m deep, some up to 9.9 m."""
    return float(np.clip(rng.lognormal(np.log(2.9), 0.42), 1.0, 9.9))


def write_synthetic_nyud2(out, n: int = 400, n_test: int | None = None, size=(80, 60), crop=(76, 56),
                          seed: int = 0, views_per_scene: int = 8) -> Path:
    """Write the data folder; returns the path of ``nyu2_train.csv``. ``size``/``crop`` are (W, H)."""
    out = Path(out)
    if (out / "nyu2_train.csv").exists():
        raise FileExistsError(f"{out / 'nyu2_train.csv'} already exists; choose another --out or delete it.")
    width, height = size
    if crop[0] > width or crop[1] > height:
        raise ValueError(f"crop {crop} is larger than the image size {size}.")
    rng = np.random.default_rng(seed)
    n_test = n_test if n_test is not None else max(8, n // 6)
    train_rows = []
    for start in range(0, n, views_per_scene):
        scene = f"{ROOMS[rng.integers(len(ROOMS))]}_{start // views_per_scene:04d}_out"
        folder = out / "nyu2_train" / scene
        folder.mkdir(parents=True, exist_ok=True)
        palette, wall = rng.uniform(0.15, 0.95, (5, 3)), _wall_distance(rng)
        for view in range(min(views_per_scene, n - start)):
            depth = _depth_map(rng, width, height, wall * rng.uniform(0.9, 1.1))
            Image.fromarray(_render(rng, depth, palette)).save(folder / f"{view}.jpg", quality=92)
            Image.fromarray(np.clip(np.rint(depth / 10 * 255), 0, 255).astype(np.uint8)).save(folder / f"{view}.png")
            train_rows.append((f"data/nyu2_train/{scene}/{view}.jpg", f"data/nyu2_train/{scene}/{view}.png"))
    test_dir = out / "nyu2_test"
    test_dir.mkdir(parents=True, exist_ok=True)
    test_rows, test_depths = [], []
    for index in rng.choice(1449, size=min(n_test, 1449), replace=False).tolist():
        palette = rng.uniform(0.15, 0.95, (5, 3))
        depth = _depth_map(rng, width, height, _wall_distance(rng))
        millimetres = np.rint(depth * 1000).astype(np.uint16)
        Image.fromarray(_render(rng, depth, palette)).save(test_dir / f"{index:05d}_colors.png")
        Image.fromarray(millimetres).save(test_dir / f"{index:05d}_depth.png")
        test_rows.append((f"data/nyu2_test/{index:05d}_colors.png", f"data/nyu2_test/{index:05d}_depth.png"))
        left, top = int(round((width - crop[0]) / 2.0)), int(round((height - crop[1]) / 2.0))
        test_depths.append(millimetres[top:top + crop[1], left:left + crop[0]].astype(np.float32) / 1000.0)
    np.save(out / "test_balanced_mask.npy", balanced_mask(np.stack(test_depths), seed=seed))
    subset = rng.choice(len(train_rows), size=min(600, max(1, len(train_rows) // 4)), replace=False)
    write_pairs(out / "nyu2_test.csv", test_rows)
    write_pairs(out / "nyu2_train_FDS_subset.csv", [train_rows[i] for i in sorted(subset)])
    (out / "SYNTHETIC_nyud2.json").write_text(json.dumps({
        "note": "synthetic NYUD2-DIR (not real images), written by `python -m common.synthetic nyud2`; safe to delete",
        "size": list(size), "scale": min(size), "crop": list(crop), "n": n, "n_test": n_test, "seed": seed}) + "\n")
    write_pairs(out / "nyu2_train.csv", train_rows)           # last: its presence means the folder is complete
    return out / "nyu2_train.csv"


def write_pairs(path: Path, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{image},{depth}\n" for image, depth in rows))
    tmp.replace(path)
