"""docs/reproduce.md: the published protocols' command lines parse with their benchmark's flags."""
import re
import shlex
from pathlib import Path

from common import cli
from common.tools.report import BENCHMARK_NAMES
from folders import folder_module

REPRODUCE = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
FOLDERS = {name: folder for folder, name in BENCHMARK_NAMES.items()}
ROW = re.compile(rf"^\| ({'|'.join(map(re.escape, FOLDERS))}) \| ([^|]+) \| `python train.py ([^`]*)`", re.MULTILINE)


def reproduce_rows(heading: str) -> list:
    """The command rows of the docs/reproduce.md section whose heading starts with ``heading``, each as
    ``(benchmark, run, argv, args)``: the row's benchmark and run columns, its flags, and those flags parsed by the
    benchmark's own ``train.py`` parser."""
    section = REPRODUCE.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = []
    for benchmark, run, flags in ROW.findall(section):
        argv = shlex.split(flags.replace("<stage 1>", "stage1"))
        parser = folder_module(FOLDERS[benchmark], "train").build_parser()
        rows.append((benchmark, run.strip(), argv, cli.parse(parser, argv)))
    return rows


# -- the published protocols' command lines -------------------------------------------------------------------------
def test_the_reproduce_commands_of_rnc_uvote_and_vir_parse(capsys):
    """Every command of docs/reproduce.md's RnC/UVOTE/VIR section parses with its benchmark's flags and sets the
    method it names."""
    rows = reproduce_rows("RnC (Zha et al.")
    assert len(rows) == 7
    for benchmark, run, argv, args in rows:
        method = re.match(r"\w+", run).group().lower()
        if method == "rnc":             # the paper's two stages (the second trains a head: RnC itself is off)
            assert args.rnc_stage == ("encoder" if "stage 1" in run else "linear") and args.rnc == ("stage 1" in run)
            assert args.lr_schedule == "cosine"     # to lr·0.1³, as the authors' main_*.py
        else:
            assert getattr(args, method) is True, (benchmark, run)
        if "--num_branch" in argv:
            assert args.num_branch == int(argv[argv.index("--num_branch") + 1])


def test_the_reproduce_commands_of_ordinal_entropy_parse(capsys):
    """Every command of docs/reproduce.md's Ordinal Entropy section parses with its benchmark's flags, turns the
    method on at the weight it names, and groups STS-B's scores on the 0.1 bins."""
    rows = reproduce_rows("Ordinal Entropy (Zhang et al.")
    assert len(rows) == 5
    for benchmark, _, _, args in rows:
        assert args.ordinal_entropy is True and args.oe_weight == 1.0
        assert args.oe_groups == ("bins" if benchmark == "STS-B-DIR" else "labels")


def test_the_reproduce_commands_of_group_dir_parse_with_its_defaults(capsys):
    """docs/reproduce.md's Group-DIR rows parse with their benchmark's flags, turn it on and keep the authors'
    per-benchmark defaults (σ 0.5 and MSE on AgeDB, σ 1 and L1 on IMDB-WIKI, 5 groups and τ 2 on STS-B)."""
    rows = reproduce_rows("Group-DIR (Pu et al.")
    assert len(rows) == 4
    want = {"AgeDB-DIR": (10, 0.5, "mse", 0.07), "IMDB-WIKI-DIR": (10, 1.0, "l1", 0.07), "STS-B-DIR": (5, 1.0, "mse", 2.0)}
    for benchmark, _, argv, args in rows:
        assert args.group_dir is True
        groups, sigma, reg_loss, temp = want[benchmark]
        assert (args.groups, args.reg_loss) == (groups, reg_loss)
        if "--group_sigma" not in argv:
            assert (args.group_sigma, args.group_temp) == (sigma, temp)


def test_the_reproduce_commands_of_accon_parse_with_the_authors_protocol(capsys):
    """docs/reproduce.md's ACCon rows: the README's protocol (batch 64, lr 2.5e-4, 90 epochs, 512-d projection on
    the ages; λ 10, T = T_b = 1, M 5, 2,000-d projection, patience 30 on STS-B)."""
    rows = reproduce_rows("ACCon (AAAI 2025)")
    assert [benchmark for benchmark, *_ in rows] == ["AgeDB-DIR", "IMDB-WIKI-DIR", "STS-B-DIR"]
    for benchmark, _, _, args in rows:
        assert args.accon and args.accon_base_temperature is None
        if benchmark == "STS-B-DIR":
            assert (args.accon_weight, args.accon_temperature, args.accon_label_range, args.accon_variant,
                    args.proj_dims, args.accon_relu, args.accon_normalize, args.lr, args.batch_size,
                    args.patience) == (10.0, 1.0, 5.0, "stsb", 2000, 0, 1, 1e-4, 128, 30)
        else:
            assert (args.accon_weight, args.accon_temperature, args.accon_label_range, args.accon_variant,
                    args.proj_dims, args.accon_relu, args.batch_size, args.lr, args.epoch, tuple(args.schedule),
                    args.optimizer, args.loss) == (1.0, 0.05, 100.0, "age", 512, 1, 64, 2.5e-4, 90, (60, 80),
                                                   "adam", "l1")
            assert args.accon_augment == ("rnc" if benchmark == "AgeDB-DIR" else "main")


def test_the_reproduce_commands_of_dist_loss_parse(capsys):
    """Every command of docs/reproduce.md's Dist Loss section parses with its benchmark's flags: the authors'
    protocol (batch 512, inverse weights, balanced-MAE selection) with the term on, and its λ = 0 base without it."""
    rows = reproduce_rows("Dist Loss (Nie, Tang, Hong")
    assert len(rows) == 7
    for benchmark, run, _, args in rows:
        assert args.reweight == "inverse"
        assert args.dist_loss == ("stage 1" not in run), run
        if benchmark in ("AgeDB-DIR", "IMDB-WIKI-DIR"):
            assert args.batch_size == 512 and args.loss == "l1"
            assert args.select_on == ("bmae" if args.dist_loss else None)
            assert args.retrain_fc == ("stage 2" in run)
        if args.dist_loss:
            assert (args.distribution_loss_term_weight, args.regularization_strength, args.bw_method) == (1, 0.1, 0.5)


def test_the_reproduce_commands_of_bsam_parse(capsys):
    """docs/reproduce.md's BSAM rows parse with their benchmark's flags and turn it on at the authors' ρ (0.2 AgeDB,
    0.05 IMDB-WIKI) with their SGD protocol and raw weights on the ages, and at the proposal's ρ elsewhere."""
    rows = reproduce_rows("BSAM (Liu, Wang, Duan, Li")
    assert len(rows) == 4
    for benchmark, _, _, args in rows:
        assert args.bsam is True
        if benchmark in ("AgeDB-DIR", "IMDB-WIKI-DIR"):
            assert args.rho == (0.2 if benchmark == "AgeDB-DIR" else 0.05)
            assert (args.model, args.optimizer, args.lr, args.momentum, args.weight_decay) == \
                ("resnet18", "sgd", 0.2, 0.9, 1e-4)
            assert (args.batch_size, args.epoch, args.lr_schedule, args.loss) == (256, 400, "cosine", "l1")
            assert args.bsam_weights == "raw" and args.reweight == "none"
        else:
            assert args.rho == 0.05 and args.bsam_weights == "sqrt_inv"
