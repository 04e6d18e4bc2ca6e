"""NYUD2-DIR: the data pipeline, pixel weights, shot bins, metrics, model, checkpoints and every method end to end.

End-to-end runs use a synthetic NYUD2 (``python -m common.synthetic nyud2``) of 48×36 images cropped to 44×32, a
ResNet-18 encoder without ImageNet weights, on CPU.
"""
import hashlib
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from common import checkpointing
from common.bins import DEPTH_BINS
from common.depth import depth_metrics, pixel_bucket_weights, shot_bins
from common.fds import FDS
from common.synthetic.depth import write_synthetic_nyud2
from folders import ROOT, folder_main, folder_module

dataset = folder_module("nyud2-dir", "dataset")
resnet = folder_module("nyud2-dir", "resnet")
SHARED = ROOT.parent / "shared" / "data" / "nyud2-dir"
KEYS = SHARED / "reference_checkpoint_keys.json"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/nyud2-dir is absent")

# The references' hard-coded shot lists (util.Evaluator, DIR), written out.
REFERENCE_SHOTS = {
    "many": list(range(9, 46)) + [47, 49],
    "medium": [7, 8, 46, 48, 50, 51, 52, 53, 54, 55, 56, 58, 60, 61, 63],
    "few": list(range(0, 7)) + [57, 59, 62] + list(range(64, 100)),
}
SMALL = ["--scale", "36", "--crop", "44", "32", "--encoder", "resnet18", "--pretrained_encoder", "none",
         "--batch_size", "8", "--workers", "0", "--print_freq", "100", "--epochs", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("nyud2") / "data"
    write_synthetic_nyud2(out, n=32, n_test=6, size=(48, 36), crop=(44, 32), seed=0)
    return out


def copy_of(data_dir, folder):
    """A copy of the synthetic data folder that a test may change."""
    import shutil
    shutil.copytree(data_dir, folder)
    return folder


# -- the references' table, shots and weights --------------------------------------------------------------------
def test_reference_histogram_facts():
    table = dataset.REFERENCE_TRAIN_PIXELS
    assert table.sum() == 3_513_286_656 == 50_688 * 304 * 228
    assert int(table.argmax()) == 21 and table[21] == 146_133_612
    nonzero = np.flatnonzero(table)
    assert int(nonzero[table[nonzero].argmin()]) == 99 and table[99] == 1_132_666
    assert (table[:7] == 0).all() and (table[7:] > 0).all()
    assert dataset.check_reference_histogram(table) == []
    assert "bin 21" in dataset.check_reference_histogram(table + np.eye(100, dtype=np.int64)[21])[1]


def test_shot_thresholds_reproduce_the_reference_lists():
    table = dataset.REFERENCE_TRAIN_PIXELS
    shots = shot_bins(table, dataset.MANY_SHOT_FRACTION * table.sum(), dataset.LOW_SHOT_FRACTION * table.sum())
    assert {k: v.tolist() for k, v in shots.items()} == REFERENCE_SHOTS


@pytest.mark.parametrize("reweight, lds", [("inverse", False), ("sqrt_inv", False), ("inverse", True),
                                           ("sqrt_inv", True)])
def test_pixel_weights_follow_the_reference_recipe(reweight, lds):
    """Written out from docs/methods.md §2.3 with Python loops; the pixel-weighted mean weight is 1."""
    from scipy.ndimage import convolve1d
    from common.lds import get_lds_kernel_window
    table = [int(v) for v in dataset.REFERENCE_TRAIN_PIXELS]
    start = 7
    values = table[start:]
    if reweight == "sqrt_inv":
        values = [math.sqrt(v) for v in values]
    if lds:
        values = list(convolve1d(np.array(values, dtype=np.float64), get_lds_kernel_window("gaussian", 5, 2),
                                 mode="reflect"))
    effective = [values[0]] * start + list(values)
    scale = sum(table) / sum(n / e for n, e in zip(table, effective))
    expected = [np.float32(scale / e) for e in effective]
    got = pixel_bucket_weights(table, reweight, lds, "gaussian", 5, 2, start)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.dot(got.astype(np.float64), table) / sum(table) == pytest.approx(1.0, rel=1e-6)
    assert pixel_bucket_weights(table, "none") is None


def test_bni_prior_is_the_normalised_pixel_table():
    centres, weights = dataset.bni_prior(dataset.REFERENCE_TRAIN_PIXELS, "none", False, "gaussian", 5, 2)
    np.testing.assert_allclose(centres, np.arange(100) * 0.1 + 0.05, rtol=1e-12)
    table = dataset.REFERENCE_TRAIN_PIXELS.astype(np.float64)
    table[:7] = table[7]
    np.testing.assert_allclose(weights, table / table.sum(), rtol=1e-12)


def test_lds_truncate_reproduces_the_references_integer_smoothing():
    """--lds_truncate: the references smooth the int64 pixel table with scipy, whose integer output truncates."""
    from scipy.ndimage import convolve1d
    from common.lds import get_lds_kernel_window
    table = np.asarray(dataset.REFERENCE_TRAIN_PIXELS, dtype=np.int64)
    smoothed = convolve1d(table[7:], get_lds_kernel_window("gaussian", 5, 2), mode="reflect")
    assert smoothed.dtype == np.int64                       # the references' truncation, done by scipy itself
    effective = np.concatenate([np.full(7, smoothed[0]), smoothed]).astype(np.float64)
    scale = table.sum() / (table / effective).sum()
    got = pixel_bucket_weights(table, "inverse", True, "gaussian", 5, 2, 7, truncate=True)
    np.testing.assert_array_equal(got, (scale / effective).astype(np.float32))
    _, prior = dataset.bni_prior(table, "inverse", True, "gaussian", 5, 2, truncate=True)
    np.testing.assert_array_equal(prior, effective / effective.sum())
    _, untruncated = dataset.bni_prior(table, "inverse", True, "gaussian", 5, 2)
    assert not np.array_equal(prior, untruncated)            # the switch changes the float64 prior
    # sqrt_inv smooths floats in the references too: nothing to truncate
    np.testing.assert_array_equal(pixel_bucket_weights(table, "sqrt_inv", True, truncate=True),
                                  pixel_bucket_weights(table, "sqrt_inv", True))


# -- metrics and masks ----------------------------------------------------------------------------------------------


def test_fds_statistics_streamed_equal_one_pass():
    """The batch-by-batch accumulator (NYUD2's 600 × 128 × 114 × 152 features do not fit at once) equals the
    one-call update."""
    g = torch.Generator().manual_seed(0)
    make = lambda: FDS(4, bucket_num=100, bucket_start=7, bins=DEPTH_BINS, edge_rule="clamp", ks=5, sigma=2).double()
    whole, streamed = make(), make()
    for epoch in range(3):
        features = torch.rand(6, 4, 5, 7, generator=g, dtype=torch.float64) * (epoch + 1)
        depth = torch.rand(6, 1, 5, 7, generator=g, dtype=torch.float64) * 9
        whole.update_last_epoch_stats(epoch)
        whole.update_running_stats(features, depth, epoch)
        moments = streamed.statistics()
        for part in (slice(0, 1), slice(1, 4), slice(4, 6)):
            moments.add(features[part], depth[part])
        moments.commit(epoch)
    for name in ("running_mean", "running_var", "smoothed_mean_last_epoch", "num_samples_tracked"):
        torch.testing.assert_close(getattr(streamed, name), getattr(whole, name), rtol=1e-10, atol=1e-12)


# -- data ----------------------------------------------------------------------------------------------------------------


def test_histogram_is_computed_once_and_cached(data_dir, monkeypatch):
    pairs = dataset.read_pairs(data_dir / "nyu2_train.csv", data_dir)
    counts = dataset.cached_pixel_histogram(data_dir, pairs, 36, (44, 32))
    # A loop over pixels of the un-augmented crops.
    expected = np.zeros(100, dtype=np.int64)
    for image_path, depth_path in pairs:
        with Image.open(depth_path) as depth:
            array = np.asarray(depth, dtype=np.float32)[2:34, 2:46] / 255.0 * 10.0
        for value in array.reshape(-1):
            expected[min(int(value * np.float32(10)), 99)] += 1
    np.testing.assert_array_equal(counts, expected)
    monkeypatch.setattr(dataset, "pixel_histogram", lambda *a: pytest.fail("recomputed instead of cached"))
    np.testing.assert_array_equal(dataset.cached_pixel_histogram(data_dir, pairs, 36, (44, 32)), expected)


def test_a_rewritten_depth_map_recomputes_the_cached_histogram(tmp_path):
    """The cache is keyed on the depth files themselves: same names and count, new content, new histogram."""
    data = tmp_path / "data"
    write_synthetic_nyud2(data, n=8, n_test=2, size=(48, 36), crop=(44, 32), seed=0)
    pairs = dataset.read_pairs(data / "nyu2_train.csv", data)
    before = dataset.cached_pixel_histogram(data, pairs, 36, (44, 32))
    depth = pairs[0][1]
    Image.fromarray(np.full((36, 48), 250, np.uint8)).save(depth)       # every pixel at 9.8 m
    os.utime(depth, ns=(depth.stat().st_atime_ns, depth.stat().st_mtime_ns + 10**9))
    after = dataset.cached_pixel_histogram(data, pairs, 36, (44, 32))
    np.testing.assert_array_equal(after, dataset.pixel_histogram(pairs, 36, (44, 32)))
    assert after[98] > before[98] and after.sum() == before.sum()


def test_a_gai_prior_fitted_on_another_histogram_is_refused(tmp_path):
    data = tmp_path / "data"
    write_synthetic_nyud2(data, n=8, n_test=2, size=(48, 36), crop=(44, 32), seed=0)
    script = ROOT / "nyud2-dir" / "data" / "preprocess_gmm.py"
    done = subprocess.run([sys.executable, str(script), "--data_dir", str(data), "--K", "2", "--reference_histogram"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    flags = ["--data_dir", str(data), "--store_root", str(tmp_path), "--store_name", "gai", "--encoder", "resnet18",
             "--pretrained_encoder", "none", "--scale", "36", "--crop", "44", "32", "--epoch", "1", "--batch_size",
             "4", "--workers", "0", "--select_on_test", "--bmse", "--imp", "gai"]
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(flags)
    assert str(info.value.code) == (f"error: GMM file {data / 'gmm.npz'} was not fitted on this run's training pixel "
                                    "histogram (the data changed since it was written); re-create it with `python "
                                    f"data/preprocess_gmm.py --data_dir {data}`.")


def test_samples_shapes_weights_and_masks(data_dir):
    pairs = dataset.read_pairs(data_dir / "nyu2_train.csv", data_dir)
    weights = np.arange(100, dtype=np.float32) + 1
    train = dataset.NYUD2Dataset(pairs, "train", 36, (44, 32), bucket_weights=weights)
    sample = train[0]
    assert sample["input"].shape == (3, 32, 44) and sample["target"].shape == (1, 16, 22)
    np.testing.assert_array_equal(sample["weight"].numpy(), weights[DEPTH_BINS.index(sample["target"].numpy())])
    mask = np.load(data_dir / "test_balanced_mask.npy")
    test_pairs = dataset.read_pairs(data_dir / "nyu2_test.csv", data_dir)
    test = dataset.NYUD2Dataset(test_pairs, "test", 36, (44, 32), mask=mask)
    sample = test[3]
    assert sample["target"].shape == (1, 32, 44) and sample["mask"].shape == (1, 32, 44)
    assert torch.equal(sample["mask"][0], torch.from_numpy(mask[3].astype(bool)))
    # 16-bit millimetres → metres, exactly.
    with Image.open(test_pairs[3][1]) as depth:
        mm = np.asarray(depth, dtype=np.float32)[2:34, 2:46]
    np.testing.assert_array_equal(sample["target"][0].numpy(), mm / 1000.0)


@needs_shared
def test_reference_file_lists_parse():
    test = dataset.read_pairs(SHARED / "nyu2_test.csv", "/data")
    subset = dataset.read_pairs(SHARED / "nyu2_train_FDS_subset.csv", "/data")
    assert len(test) == 654 and len(subset) == 600
    assert str(test[0][0]) == "/data/nyu2_test/00000_colors.png"
    assert len({dataset.scene_of(image) for image, _ in subset}) == 221
    assert hashlib.sha256((SHARED / "nyu2_train_FDS_subset.csv").read_bytes()).hexdigest() == \
        "e2e00e2388db5a4a6917b7f1c4af68b5fd4012f2884acbbb810ffe8c0957f5b6"
    # The same file as the DIR repository's blob (git's id: SHA-1 of "blob <size>\0" and the bytes).
    content = (SHARED / "nyu2_train_FDS_subset.csv").read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == "bfaf8cb28f959de3faa9d924897e53ba43de76b9"


@needs_shared
def test_published_subset_is_verified_by_its_hash(tmp_path):
    script = ROOT / "nyud2-dir" / "data" / "preprocess_nyud2.py"
    (tmp_path / "nyu2_test.csv").write_text((SHARED / "nyu2_test.csv").read_text())
    source = tmp_path / "source"
    source.mkdir()
    (source / "nyu2_train_FDS_subset.csv").write_bytes((SHARED / "nyu2_train_FDS_subset.csv").read_bytes())
    # A placeholder mask already in place (the published one is not stored here): only the subset is fetched.
    np.save(tmp_path / "test_balanced_mask.npy", np.zeros((654, 228, 304), np.uint8))
    done = subprocess.run([sys.executable, str(script), "--data_dir", str(tmp_path), "--source_dir", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "the published FDS subset, verified" in done.stdout
    (tmp_path / "nyu2_train_FDS_subset.csv").unlink()
    (source / "nyu2_train_FDS_subset.csv").write_text("data/x.jpg,data/x.png\n")
    done = subprocess.run([sys.executable, str(script), "--data_dir", str(tmp_path), "--source_dir", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "not the published file" in done.stderr
    assert not (tmp_path / "nyu2_train_FDS_subset.csv").exists()


def test_a_fetched_mask_is_verified_by_its_git_blob_id(tmp_path):
    """The published mask is known by its full git blob id (the DIR repository's tree at a6fdc45); a file of the
    right shape and dtype but other content is refused and deleted, the message naming the file, both ids and what
    to do. The blob id is git's own (`git hash-object`)."""
    import runpy
    script = runpy.run_path(str(ROOT / "nyud2-dir" / "data" / "preprocess_nyud2.py"))
    git_blob_id = script["git_blob_id"]
    assert script["MASK_BLOB"] == "156c67de7a6901c50f15b011e07c42c67e6203c3"
    if (SHARED / "HASHES.json").is_file():
        published = json.loads((SHARED / "HASHES.json").read_text())["git_blob"]
        assert published["nyud2-dir/data/test_balanced_mask.npy"] == script["MASK_BLOB"]
    sample = tmp_path / "sample.bin"
    sample.write_bytes(bytes(range(256)) * 5000)
    hashed = subprocess.run(["git", "hash-object", str(sample)], capture_output=True, text=True, check=True)
    assert git_blob_id(sample) == hashed.stdout.strip()
    data, source = tmp_path / "data", tmp_path / "source"
    data.mkdir()
    source.mkdir()
    (data / "nyu2_test.csv").write_text("data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png\n" * 2)
    (data / "nyu2_train_FDS_subset.csv").write_text("in place\n")          # only the mask is fetched
    np.save(source / "test_balanced_mask.npy", np.ones((2, 228, 304), np.uint8))
    done = subprocess.run([sys.executable, str(ROOT / "nyud2-dir" / "data" / "preprocess_nyud2.py"), "--data_dir",
                           str(data), "--source_dir", str(source)], capture_output=True, text=True)
    blob = git_blob_id(source / "test_balanced_mask.npy")
    assert done.returncode == 1 and done.stderr.strip() == (
        f"error: {source / 'test_balanced_mask.npy'} is not the published test_balanced_mask.npy: its git blob id is "
        f"{blob}, the published file's (DIR repository at a6fdc45) is 156c67de7a6901c50f15b011e07c42c67e6203c3; "
        "nothing was kept (replace that copy with the published file, or leave out --source_dir to download it, or "
        "pass --make_mask to recompute one, which is not the published mask).")
    assert not (data / "test_balanced_mask.npy").exists()
    # A file whose id shares the first 32 bits would not be enough: only the full id is accepted.
    verify_mask = script["verify_mask"]
    np.save(data / "test_balanced_mask.npy", np.ones((2, 228, 304), np.uint8))
    verify_mask.__globals__["MASK_BLOB"] = blob[:8] + "0" * 32              # the script's own copy of its globals
    with pytest.raises(SystemExit, match=f"its git blob id is {blob}, the published file's .* is {blob[:8]}0{{32}}"):
        verify_mask(data / "test_balanced_mask.npy", 2)
    assert not (data / "test_balanced_mask.npy").exists()
    verify_mask.__globals__["MASK_BLOB"] = blob                            # taken for the published id: kept
    np.save(data / "test_balanced_mask.npy", np.ones((2, 228, 304), np.uint8))
    verify_mask(data / "test_balanced_mask.npy", 2)
    assert (data / "test_balanced_mask.npy").is_file()


def test_labeled_mat_conversion(tmp_path):
    """A tiny v7.3-style file (transposed arrays, scene references) becomes the DenseDepth layout."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 3, 16, 12), dtype=np.uint8)          # (N, 3, W, H) as MATLAB stores it
    depths = rng.uniform(0.5, 9.5, (4, 16, 12)).astype(np.float32)         # (N, W, H)
    with h5py.File(tmp_path / "labeled.mat", "w") as handle:
        handle["images"], handle["depths"] = images, depths
        refs = []
        for name in ("kitchen_0001", "kitchen_0001", "office_0002", "office_0002"):
            handle.create_dataset(f"#refs#/{name}_{len(refs)}", data=np.array([ord(c) for c in name], np.uint16))
            refs.append(handle[f"#refs#/{name}_{len(refs)}"].ref)
        handle.create_dataset("scenes", data=np.array([refs], dtype=h5py.ref_dtype))
    data = tmp_path / "data"
    data.mkdir()
    (data / "nyu2_test.csv").write_text("data/nyu2_test/00002_colors.png,data/nyu2_test/00002_depth.png\n")
    script = ROOT / "nyud2-dir" / "data" / "convert_labeled_mat.py"
    done = subprocess.run([sys.executable, str(script), "--mat", str(tmp_path / "labeled.mat"), "--data_dir",
                           str(data)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train = dataset.read_pairs(data / "nyu2_train.csv", data)
    assert [p[0].parent.name for p in train] == ["kitchen_0001_out", "kitchen_0001_out", "office_0002_out"]
    with Image.open(data / "nyu2_test" / "00002_depth.png") as depth:
        np.testing.assert_array_equal(np.asarray(depth), np.rint(depths[2].T * 1000).astype(np.uint16))
    with Image.open(data / "nyu2_test" / "00002_colors.png") as image:
        np.testing.assert_array_equal(np.asarray(image), images[2].transpose(2, 1, 0))


# -- model and checkpoints -----------------------------------------------------------------------------------------------
def test_model_output_size_and_fds_in_training_only():
    fds = FDS(80, 100, 7, bins=DEPTH_BINS, edge_rule="clamp", ks=5, sigma=2, start_smooth=0)
    model = resnet.DepthModel("resnet18", fds=fds)
    with torch.no_grad():
        fds.smoothed_mean_last_epoch.fill_(1.0)
        fds.refresh_calibration()
    x, depth = torch.randn(2, 3, 56, 76), torch.rand(2, 1, 28, 38) * 9
    model.train()
    fds.set_epoch(1)
    out = model(x, depth)
    assert out["pred"].shape == (2, 1, 28, 38) and out["encoding"].shape == (2, 80, 28, 38)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, depth)["pred"], model(x)["pred"])


@pytest.mark.skipif(not KEYS.is_file(), reason="../shared/data/nyud2-dir/reference_checkpoint_keys.json is absent")
def test_reference_checkpoint_maps_onto_our_model(tmp_path):
    spec = json.loads(KEYS.read_text())
    g = torch.Generator().manual_seed(0)
    dtypes = {"torch.float32": torch.float32, "torch.int64": torch.int64}
    state = {name: (torch.randn(shape, generator=g) if dtypes[dtype].is_floating_point
                    else torch.zeros(shape, dtype=torch.int64)) for name, shape, dtype in spec["keys"]}
    checkpoint = {"state_dict": state, "epoch": 9, "error": np.float64(1.3),
                  "metric": {shot: {"RMSE": np.float64(1.0), "NUM": 10} for shot in ("overall", "many")}}
    torch.save(checkpoint, tmp_path / "ref.pth")
    loaded = checkpointing.load_checkpoint(tmp_path / "ref.pth")        # numpy scalars allowed, nothing else
    assert loaded["error"] == 1.3
    from common.fds import adapt_fds_state
    model = resnet.DepthModel("resnet50", fds=FDS(128, 100, 7, bins=DEPTH_BINS, edge_rule="clamp"))
    model.load_state_dict(adapt_fds_state(loaded["state_dict"], model, print))
    assert torch.equal(model.R.fds.running_mean, state["module.R.FDS.running_mean"])
    assert torch.equal(model.R.conv2.weight, state["module.R.conv2.weight"])
    plain = resnet.DepthModel("resnet50")
    logged = []
    plain.load_state_dict(adapt_fds_state(loaded["state_dict"], plain, logged.append))
    assert len(logged) == 1 and "8 tensors" in logged[0]


# -- end to end ----------------------------------------------------------------------------------------------------------
def run_nyud2(data_dir, store_root, name, *flags):
    return folder_main("nyud2-dir")(["--data_dir", str(data_dir), "--store_root", str(store_root), "--store_name",
                                     name, *SMALL, *flags])


METHODS = {
    "vanilla": ([], {"mse"}),
    "inverse_lds": (["--reweight", "inverse", "--lds"], {"mse"}),
    "fds": (["--fds", "--epochs", "2"], {"mse"}),
    "bmse_bni": (["--bmse", "--imp", "bni", "--init_noise_sigma", "1.0", "--fix_noise_sigma"], {"bmse"}),
    "conr": (["--conr", "-w", "0.2", "--beta", "0.2", "-e", "0.2"], {"mse", "conr"}),
    "ranksim": (["--regularization_weight", "1"], {"mse", "ranksim"}),
    "srl": (["--srl", "--n_points", "50", "--embedding_dim", "8", "--epochs", "2"],
            {"mse", "srl_contrastive", "srl_enveloping", "srl_homogeneity"}),
    "all_together": (["--reweight", "sqrt_inv", "--lds", "--fds", "--conr", "--regularization_weight", "1", "--srl",
                      "--n_points", "50", "--embedding_dim", "8", "--epochs", "2"],
                     {"mse", "conr", "ranksim", "srl_contrastive", "srl_enveloping", "srl_homogeneity"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_and_reports(method, data_dir, tmp_path):
    flags, components = METHODS[method]
    result = run_nyud2(data_dir, tmp_path, method, *flags)
    run_dir = tmp_path / method
    saved = json.loads((run_dir / "results.json").read_text())
    log = (run_dir / "training.log").read_text()
    progress = [line for line in log.splitlines() if "ETA" in line][-1]
    names = set(progress.split("]")[1].split("ETA")[0].split()[0::2]) - {"total"}
    assert names == components
    predictions = np.load(run_dir / "test_predictions.npz")
    shots = {k: predictions[f"{k}_bins"] for k in ("many", "medium", "few")}
    recomputed = depth_metrics(predictions["preds"], predictions["labels"], shots,
                               pixel_counts=predictions["train_pixel_counts"])
    assert json.dumps(recomputed, sort_keys=True) == json.dumps(saved["test"], sort_keys=True)
    assert saved["test"]["all"]["count"] == int(np.load(data_dir / "test_balanced_mask.npy").sum())
    assert result["test"]["all"]["rmse"] == saved["test"]["all"]["rmse"]
    checkpoint = torch.load(run_dir / "ckpt.pth.tar", weights_only=True)
    if "--fds" in flags:
        assert checkpoint["state_dict"]["R.fds.epoch"].item() == 1
        assert checkpoint["state_dict"]["R.fds.num_samples_tracked"].sum() > 0


@pytest.mark.slow
def test_evaluate_round_trip_and_the_references_test_py(data_dir, tmp_path, capsys):
    result = run_nyud2(data_dir, tmp_path, "run", "--fds", "--select_on_test")
    best = tmp_path / "run" / "ckpt.best.pth.tar"
    again = folder_main("nyud2-dir")(["--evaluate", "--resume", str(best), "--data_dir", str(data_dir),
                                      "--workers", "0"])
    assert json.dumps(again, sort_keys=True) == json.dumps(result["test"], sort_keys=True)
    done = subprocess.run([sys.executable, "test.py", "--eval_model", str(best), "--data_dir", str(data_dir),
                           "--workers", "0"], cwd=ROOT / "nyud2-dir", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert f"{result['test']['all']['rmse']:7.4f}" in done.stdout
    assert "TEST set (--select_on_test)" in (tmp_path / "run" / "training.log").read_text()
    # The report reads depth runs: RMSE/δ1 table and the per-bin plot over the training pixel histogram.
    from common.tools import report
    report.main([str(tmp_path / "run"), "--plot", str(tmp_path / "plots" / "depth.png")])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| run |")][-1]   # not the header
    assert f"{result['test']['all']['rmse']:.3f}" in row and f"{result['test']['all']['delta1']:.3f}" in row
    assert (tmp_path / "plots" / "depth.png").read_bytes()[:4] == b"\x89PNG"


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(argv)
    return str(info.value.code)


@pytest.mark.slow
def test_bad_inputs_give_one_sentence(data_dir, tmp_path, capsys):
    import shutil
    base = ["--store_root", str(tmp_path), *SMALL]
    message = error_of(["--data_dir", str(tmp_path / "nowhere"), "--store_name", "a", *base])
    assert "nowhere/nyu2_train.csv does not exist" in message

    def broken_copy(name):
        copy = tmp_path / name
        shutil.copytree(data_dir, copy)
        (copy / "nyu2_train_pixel_histogram.json").unlink(missing_ok=True)
        return copy

    pointing = broken_copy("pointing")
    rows = (pointing / "nyu2_train.csv").read_text().splitlines()
    rows[3] = "data/nyu2_train/none_out/1.jpg,data/nyu2_train/none_out/1.png"
    (pointing / "nyu2_train.csv").write_text("\n".join(rows) + "\n")
    message = error_of(["--data_dir", str(pointing), "--store_name", "b", *base])
    assert "nyu2_train.csv, row 4" in message and "none_out/1.jpg does not exist" in message

    wrong_bits = broken_copy("bits")
    depth_path = dataset.read_pairs(wrong_bits / "nyu2_train.csv", wrong_bits)[0][1]
    with Image.open(depth_path) as depth:
        Image.fromarray(np.asarray(depth).astype(np.uint16) * 40).save(depth_path)
    message = error_of(["--data_dir", str(wrong_bits), "--store_name", "c", *base])
    assert str(depth_path) in message and "needs 8-bit PNGs" in message

    sizes = broken_copy("sizes")
    image_path = dataset.read_pairs(sizes / "nyu2_train.csv", sizes)[0][0]
    with Image.open(image_path) as image:
        image.resize((40, 30)).save(image_path)
    message = error_of(["--data_dir", str(sizes), "--store_name", "d", *base])
    assert "40×30 but its depth" in message and "same size" in message

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(["--data_dir", str(data_dir), "--bmse", "--imp", "bmc", *base])
    assert info.value.code == 2 and "argument --imp: invalid choice: 'bmc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        folder_main("nyud2-dir")(["--data_dir", str(data_dir), "--crop", "43", "32"])
    assert "divisible by 4" in capsys.readouterr().err

    no_mask = broken_copy("nomask")
    np.save(no_mask / "test_balanced_mask.npy", np.zeros((3, 32, 44), np.uint8))
    message = error_of(["--data_dir", str(no_mask), "--store_name", "e", *base])
    assert "has shape (3, 32, 44)" in message and "expected (6, 32, 44)" in message


def test_missing_imagenet_weights_are_one_sentence(monkeypatch, tmp_path):
    import urllib.error
    from torchvision.models import ResNet18_Weights
    from common.errors import RunError

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(RunError, match=r"not cached and could not be downloaded .* put resnet18-.*\.pth in .*hub/"
                                       r"checkpoints or pass --pretrained_encoder none"):
        resnet.build_model("resnet18", pretrained_encoder="imagenet")
    with pytest.raises(RunError, match="no such file"):
        resnet.build_model("resnet18", pretrained_encoder=str(tmp_path / "missing.pth"))


def test_a_checkpoint_with_other_pickled_objects_is_refused(tmp_path):
    from common.errors import RunError
    torch.save({"state_dict": {}, "hook": subprocess.run}, tmp_path / "evil.pth")
    with pytest.raises(RunError, match="could not be read"):
        checkpointing.load_checkpoint(tmp_path / "evil.pth")


# The NYUD2 command lines of the DIR, BMSE and ConR READMEs, with the values they must set.
NYUD2_PUBLISHED = [
    ("--data_dir ./data --reweight none", dict(reweight="none", lds=False, fds=False)),
    ("--reweight inverse", dict(reweight="inverse")),
    ("--reweight sqrt_inv", dict(reweight="sqrt_inv")),
    ("--reweight inverse --lds --lds_kernel gaussian --lds_ks 5 --lds_sigma 2",
     dict(reweight="inverse", lds=True, lds_ks=5, lds_sigma=2.0)),
    ("--fds --fds_kernel gaussian --fds_ks 5 --fds_sigma 2", dict(fds=True, fds_ks=5, bucket_start=7, bucket_num=100)),
    ("--reweight inverse --retrain_fc --pretrained ckpt.pth.tar", dict(retrain_fc=True, pretrained="ckpt.pth.tar")),
    ("--bmse --imp gai --gmm gmm.pkl --init_noise_sigma 1.0 --fix_noise_sigma",
     dict(bmse=True, imp="gai", gmm="gmm.pkl", init_noise_sigma=1.0, fix_noise_sigma=True)),
    ("--bmse --imp bni --init_noise_sigma 1.0 --fix_noise_sigma", dict(bmse=True, imp="bni")),
    ("--conr -w 0.2 --beta 0.2 -e 0.2", dict(conr=True, conr_window=0.2, conr_beta=0.2, conr_eta=0.2,
                                              conr_temperature=0.2)),
    ("--epochs 20 --learning-rate 1e-4 --wd 1e-4 --batch_size 32", dict(epoch=20, lr=1e-4, weight_decay=1e-4,
                                                                       batch_size=32)),
]


@pytest.mark.parametrize("line, expected", NYUD2_PUBLISHED, ids=[line[:30] for line, _ in NYUD2_PUBLISHED])
def test_published_nyud2_lines_parse_with_their_meaning(line, expected):
    import shlex
    from common import cli
    train = folder_module("nyud2-dir", "train")
    parser = train.build_parser()
    args = cli.check_args(parser, parser.parse_args(shlex.split(line)))
    assert {key: getattr(args, key) for key in expected} == expected
    defaults = parser.parse_args([])
    assert (defaults.epoch, defaults.lr, defaults.weight_decay, defaults.batch_size, defaults.loss) == \
        (10, 1e-4, 1e-4, 32, "mse")


def test_the_reproduce_rows_run_as_the_references_did():
    """docs/reproduce.md's NYUD2 rows (`$R …`): each parses, on 4 processes of 8 images (the references' 4 GPUs
    of 8), with test-set selection, the references' pixel table, their integer LDS wherever LDS is on, their FDS
    calibration wherever FDS is, and ConR over the gathered batch."""
    import re
    import shlex
    from common import cli
    text = (ROOT / "docs" / "reproduce.md").read_text()
    section = text[text.index("## NYUD2-DIR"):text.index("## ConR (Keramati")]
    processes, prefix = re.search(r'^R="torchrun --nproc_per_node=(\d+) train.py (.*)"$', section, re.M).groups()
    rows = re.findall(r"`\$R ([^`]*)`", section)
    assert len(rows) == 7
    parser = folder_module("nyud2-dir", "train").build_parser()
    for row in rows:
        args = cli.check_args(parser, parser.parse_args(shlex.split(f"{prefix} {row}")))
        assert args.batch_size // int(processes) == 8 and args.select_on_test and args.pixel_histogram == "reference"
        assert (args.lds_truncate, args.fds_skip_invalid_buckets, args.gather_features) == (args.lds, args.fds,
                                                                                           args.conr), row


@pytest.mark.slow
def test_gai_trains_with_the_fitted_prior(data_dir, tmp_path):
    """data/preprocess_gmm.py fits the mixture on the data's pixel histogram; --gmm gmm.pkl reads it."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    done = subprocess.run([sys.executable, "data/preprocess_gmm.py", "--data_dir", str(data), "--K", "4", "--scale",
                           "36", "--crop", "44", "32"], cwd=ROOT / "nyud2-dir", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from common.gmm import load_gmm
    gmm = load_gmm(data / "gmm.npz")
    assert gmm["means"].shape == (4, 1) and gmm["weights"].sum() == pytest.approx(1.0)
    run_nyud2(data, tmp_path, "gai", "--bmse", "--imp", "gai", "--gmm", "gmm.pkl", "--init_noise_sigma", "1.0",
              "--fix_noise_sigma")
    import re
    assert re.search(r"\]\s+bmse -?\d+\.\d+\s+total", (tmp_path / "gai" / "training.log").read_text())


def packed_copy(data_dir, tmp_path):
    """A copy of the synthetic data folder with its HDF5 pack (`data/pack_nyud2.py --scale 36`)."""
    data = copy_of(data_dir, tmp_path / "data")
    done = subprocess.run([sys.executable, "data/pack_nyud2.py", "--data_dir", str(data), "--scale", "36"],
                          cwd=ROOT / "nyud2-dir", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return data


@pytest.mark.slow
def test_training_from_the_hdf5_pack_gives_the_same_numbers(data_dir, tmp_path):
    data = packed_copy(data_dir, tmp_path)
    flags = ["--fds", "--select_on_test", "--workers", "2"]
    png = run_nyud2(data, tmp_path, "png", *flags)
    hdf5 = run_nyud2(data, tmp_path, "hdf5", *flags, "--data_format", "hdf5")
    assert json.dumps(png["test"], sort_keys=True) == json.dumps(hdf5["test"], sort_keys=True)
    with pytest.raises(SystemExit) as info:
        run_nyud2(data, tmp_path, "scale", "--select_on_test", "--data_format", "hdf5", "--scale", "40")
    assert "needs" in str(info.value.code) and "nyu2_pairs_40.h5" in str(info.value.code)


# NYUD2's parser leaves these out (or offers only the depth choices), so argparse itself refuses them.
@pytest.mark.parametrize("flags, sentence", [
    (["--stats_from_training"], "unrecognized arguments: --stats_from_training"),
    (["--conr_views", "2"], "unrecognized arguments: --conr_views 2"),
    (["--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
    (["--srl_num_labels", "50"], "unrecognized arguments: --srl_num_labels 50"),
    (["--schedule", "3"], "unrecognized arguments: --schedule 3"),
    (["--balanced_metric"], "unrecognized arguments: --balanced_metric"),
])
def test_flags_of_other_benchmarks_are_refused(flags, sentence, capsys):
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(flags)
    err = capsys.readouterr().err
    assert info.value.code == 2 and sentence in err
    assert "usage:" not in err and "--help" in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("denominator", ["reference", "paper"])
def test_conr_denominator_reaches_the_dense_loss(denominator):
    task = object.__new__(folder_module("nyud2-dir", "task").NYUD2Task)
    task.args = folder_module("nyud2-dir", "train").build_parser().parse_args(
        ["--conr", "--conr_denominator", denominator])
    task.pixel_counts = None
    conr = task.build_objective().conr.loss
    assert type(conr).__name__ == "ConRDense" and conr.denominator == denominator


def test_srl_slots_are_the_100_depth_bins():
    """No --srl_num_labels on NYUD2: the slots are DepthView.srl_slot's 0.1-m bins, also when a checkpoint's saved
    flags still carry another value."""
    task = object.__new__(folder_module("nyud2-dir", "task").NYUD2Task)
    task.args = folder_module("nyud2-dir", "train").build_parser().parse_args(
        ["--srl", "--n_points", "50", "--embedding_dim", "8"])
    task.pixel_counts = None
    assert task.build_objective().srl.loss.num_labels == 100
    task.args.srl_num_labels = 50
    objective = task.build_objective()
    assert objective.srl.loss.num_labels == 100 and objective.srl.surrogate.running_mean.shape[0] == 100


# -- RRT: the references re-initialise and train the whole head R on the frozen E, D and MFF -------------------------
def rrt_model(checkpoint, *flags):
    """The model NYUD2Task builds for `--retrain_fc --pretrained checkpoint` with ``flags``, and its log."""
    logged = []
    task = folder_module("nyud2-dir", "task").NYUD2Task(folder_module("nyud2-dir", "train").build_parser().parse_args(
        ["--encoder", "resnet18", "--pretrained_encoder", "none", "--retrain_fc", "--pretrained", str(checkpoint),
         *flags]))
    task.log = logged.append
    return task.build_model(), logged


def test_rrt_reinitialises_r_and_its_fds_and_trains_all_of_it_on_the_frozen_encoder(tmp_path):
    fds = lambda: FDS(resnet.feature_dim("resnet18"), 100, 7, bins=DEPTH_BINS, edge_rule="clamp")  # noqa: E731
    torch.manual_seed(0)
    stage1 = resnet.DepthModel("resnet18", fds=fds())
    with torch.no_grad():
        for name, tensor in stage1.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.5)          # every trained value differs from a freshly built model's
        stage1.R.fds.running_mean.fill_(3.0)
    saved = {k: v.clone() for k, v in stage1.state_dict().items()}
    torch.save({"state_dict": saved}, tmp_path / "stage1.pth.tar")
    fresh = resnet.DepthModel("resnet18", fds=fds()).state_dict()

    model, logged = rrt_model(tmp_path / "stage1.pth.tar", "--fds")
    for name, value in model.state_dict().items():
        if name.startswith("R."):
            assert not torch.equal(value, saved[name]) or torch.equal(value, fresh[name]), name
        else:
            assert torch.equal(value, saved[name]), name
    assert torch.equal(model.R.fds.running_mean, torch.zeros_like(model.R.fds.running_mean))
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == name.startswith("R."), name
    assert any("R re-initialised and trained (8 tensors), E, D and MFF frozen" in line for line in logged)

    # --rrt_head conv2 (this repo's earlier RRT): the checkpoint's R, only its last convolution trains.
    model, _ = rrt_model(tmp_path / "stage1.pth.tar", "--fds", "--rrt_head", "conv2")
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["R.conv2.weight", "R.conv2.bias"]


def test_rrt_from_a_checkpoint_of_another_encoder_is_one_sentence(tmp_path):
    from common.errors import RunError
    torch.save({"state_dict": resnet.DepthModel("resnet34").state_dict()}, tmp_path / "r34.pth.tar")
    with pytest.raises(RunError, match=r"the encoder, decoder and MFF of --pretrained .*r34.pth.tar does not fit "
                                       r"--encoder resnet18 \(first mismatch: E\..*\); pass the --encoder and --srl"):
        rrt_model(tmp_path / "r34.pth.tar")


@pytest.mark.slow
def test_rrt_without_a_balanced_objective_trains_r_and_warns(data_dir, tmp_path, capsys):
    """The references run RRT with any loss: the unweighted one is accepted with a warning; the second stage keeps
    stage 1's E, D and MFF and trains R from scratch."""
    run_nyud2(data_dir, tmp_path, "base", "--fds")
    capsys.readouterr()
    run_nyud2(data_dir, tmp_path, "rrt", "--fds", "--retrain_fc", "--pretrained",
              str(tmp_path / "base" / "ckpt.best.pth.tar"))
    assert "warning: --retrain_fc without --reweight or --bmse retrains on the unweighted loss" in \
        capsys.readouterr().err
    base = torch.load(tmp_path / "base" / "ckpt.best.pth.tar", weights_only=True)["state_dict"]
    rrt = torch.load(tmp_path / "rrt" / "ckpt.pth.tar", weights_only=True)["state_dict"]
    statistics = ("running_mean", "running_var", "num_batches_tracked")   # they move in train mode, frozen or not
    for name, value in base.items():
        if name.endswith(statistics) or ".fds." in name:
            continue
        assert torch.equal(rrt[name], value) != name.startswith("R."), name
    assert json.loads((tmp_path / "rrt" / "results.json").read_text())["args"]["rrt_head"] == "R"


# -- evaluation reads the test split and the checkpoint only -------------------------------------------------------------
@pytest.mark.slow
def test_evaluation_needs_no_training_data(data_dir, tmp_path):
    """The checkpoint carries the training pixel histogram (its shots): with every training file deleted, the
    evaluation gives the run's own test metrics; a checkpoint from before that (no task_state) still reads the
    training data, as before."""
    import shutil
    data = copy_of(data_dir, tmp_path / "data")
    result = run_nyud2(data, tmp_path, "run", "--select_on_test")
    best = tmp_path / "run" / "ckpt.best.pth.tar"
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["task_state"]["train_pixel_counts"] == np.load(
        tmp_path / "run" / "test_predictions.npz")["train_pixel_counts"].tolist()
    old = dict(checkpoint)
    del old["task_state"]
    torch.save(old, tmp_path / "old.pth.tar")
    shutil.rmtree(data / "nyu2_train")
    for name in ("nyu2_train.csv", "nyu2_train_FDS_subset.csv", "nyu2_train_pixel_histogram.json"):
        (data / name).unlink()
    def evaluate(path, *flags):
        return folder_main("nyud2-dir")(["--evaluate", "--resume", str(path), "--workers", "0", *flags])

    assert json.dumps(evaluate(best), sort_keys=True) == json.dumps(result["test"], sort_keys=True)
    with pytest.raises(SystemExit, match="nyu2_train.csv does not exist"):
        evaluate(tmp_path / "old.pth.tar")
    table = evaluate(tmp_path / "old.pth.tar", "--pixel_histogram", "reference")   # other shots, the same pixels
    assert [table["all"][key] for key in ("rmse", "mae", "count")] == \
        [result["test"]["all"][key] for key in ("rmse", "mae", "count")]


# -- NYUD2 bad input: one sentence each ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_truncated_pack_is_one_sentence_naming_it(data_dir, tmp_path):
    data = packed_copy(data_dir, tmp_path)
    pack = data / "nyu2_pairs_36.h5"
    pack.write_bytes(pack.read_bytes()[:pack.stat().st_size // 2])
    message = error_of(["--data_dir", str(data), "--store_root", str(tmp_path), "--store_name", "cut", *SMALL,
                        "--select_on_test", "--data_format", "hdf5"])
    assert message.startswith(f"error: {pack} could not be read (") and "\n" not in message
    assert message.endswith(f"it is truncated or corrupt; re-create it with `python data/pack_nyud2.py --data_dir "
                            f"{data} --scale 36`.")


@pytest.mark.slow
def test_a_mask_or_test_depths_that_leave_no_pixel_are_refused(data_dir, tmp_path):
    empty = copy_of(data_dir, tmp_path / "empty")
    np.save(empty / "test_balanced_mask.npy", np.zeros((6, 32, 44), np.uint8))
    message = error_of(["--data_dir", str(empty), "--store_root", str(tmp_path), "--store_name", "a", *SMALL])
    assert message == (f"error: {empty / 'test_balanced_mask.npy'} is all zeros: it selects no test pixel, so every "
                       "test metric would be over no pixel; delete it and fetch the published mask with `python "
                       "data/preprocess_nyud2.py` (or recompute one with `--make_mask`).")
    blank = copy_of(data_dir, tmp_path / "blank")
    for _, depth in dataset.read_pairs(blank / "nyu2_test.csv", blank):
        Image.fromarray(np.zeros((36, 48), np.uint16)).save(depth)
    message = error_of(["--data_dir", str(blank), "--store_root", str(tmp_path), "--store_name", "b", *SMALL])
    assert message == (f"error: the test depth maps listed in {blank / 'nyu2_test.csv'} are 0 (no depth) at every "
                       f"pixel {blank / 'test_balanced_mask.npy'} selects, so every test metric would be over no "
                       "pixel: check that they are the 16-bit millimetre maps of the test split, or recompute the "
                       "mask for them with `python data/preprocess_nyud2.py --make_mask`.")


def test_synthetic_data_name_the_scale_and_crop_they_were_written_for(data_dir, tmp_path):
    marker = json.loads((data_dir / "SYNTHETIC_nyud2.json").read_text())
    assert (marker["size"], marker["scale"], marker["crop"]) == ([48, 36], 36, [44, 32])
    message = error_of(["--data_dir", str(data_dir), "--store_root", str(tmp_path), "--store_name", "real_sizes",
                        "--encoder", "resnet18", "--pretrained_encoder", "none", "--workers", "0"])
    assert message == (f"error: {data_dir} holds synthetic NYUD2 images of 48×36 whose test mask covers the centre "
                       "44×32 (SYNTHETIC_nyud2.json): pass --scale 36 --crop 44 32 (this run has --scale 240 --crop "
                       "304 228).")


@pytest.mark.parametrize("line, sentence", [
    ("--val_fraction 0", "--val_fraction must be in (0, 1) (the share of training scenes held out), got 0.0."),
    ("--val_fraction 1", "--val_fraction must be in (0, 1) (the share of training scenes held out), got 1.0."),
    ("--many_shot_fraction 0", "--many_shot_fraction must be in (0, 1) (a share of the training pixels), got 0.0."),
    ("--low_shot_fraction 1.5", "--low_shot_fraction must be in (0, 1) (a share of the training pixels), got 1.5."),
    ("--low_shot_fraction 0.01", "--low_shot_fraction (0.01) must not exceed --many_shot_fraction (0.0077): few-shot "
                                 "bins hold fewer training pixels than many-shot ones."),
    ("--scale 0", "--scale must be > 0 (the shorter image side in pixels), got 0."),
    ("--crop 0 32", "--crop must be > 0 on both sides, got 0 32."),
    ("--crop 44 -4", "--crop must be > 0 on both sides, got 44 -4."),
    ("--rrt_head conv2", "--rrt_head chooses what --retrain_fc retrains: add --retrain_fc --pretrained CKPT, or drop "
                         "it."),
])
def test_nyud2_flags_out_of_range_are_one_sentence(line, sentence, capsys):
    with pytest.raises(SystemExit) as info:
        folder_main("nyud2-dir")(line.split())
    err = capsys.readouterr().err
    assert info.value.code == 2 and sentence in err and len(err.strip().splitlines()) == 2


def test_balanced_mse_averages_over_the_pixels_at_or_beyond_07_m_by_a_mask():
    """The reference selects the pixels ≥ 0.7 m; the view keeps every pixel and masks (fixed shapes, no host read):
    the GAI loss of the masked map equals the loss of the selected pixels."""
    from common.losses import gai_loss
    view = folder_module("nyud2-dir", "loss").DepthView()
    generator = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 1, 5, 4, generator=generator, dtype=torch.float64) * 2
    pred = depth + 0.3 * torch.randn(2, 1, 5, 4, generator=generator, dtype=torch.float64)
    rows_pred, rows_depth, rows = view.main_rows(pred, depth)
    assert rows_pred.shape == rows_depth.shape == (40, 1) and torch.equal(rows, (depth >= 0.7).reshape(-1))
    assert 0 < int(rows.sum()) < 40
    gmm = {"means": np.array([[0.8], [1.6]]), "weights": np.array([0.4, 0.6]), "variances": np.array([[[0.1]], [[0.3]]])}
    var = torch.tensor(0.5, dtype=torch.float64)
    keep = depth >= 0.7
    selected = gai_loss(pred[keep].reshape(-1, 1), depth[keep].reshape(-1, 1), gmm, var)
    torch.testing.assert_close(gai_loss(rows_pred, rows_depth, gmm, var, rows), selected, rtol=1e-13, atol=0)
