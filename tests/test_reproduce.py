"""docs/reproduce.md: the published protocols' command lines parse with their benchmark's flags."""


from common import cli


# -- the published protocols' command lines -------------------------------------------------------------------------
def test_the_reproduce_commands_of_rnc_uvote_and_vir_parse(capsys):
    """Every command of docs/reproduce.md's RnC/UVOTE/VIR section parses with its benchmark's flags and sets the
    method it names."""
    import re
    import shlex
    from pathlib import Path

    from folders import folder_module

    reproduce = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
    section = reproduce.read_text().split("## RnC (Zha et al.", 1)[1].split("\n## ", 1)[0]
    parsers = {"AgeDB-DIR": lambda: cli.build_age_parser("t"),
               "IMDB-WIKI-DIR": lambda: cli.build_age_parser("t", num_branch=3),
               "STS-B-DIR": lambda: folder_module("sts-b-dir", "train").build_parser()}
    rows = re.findall(r"^\| (AgeDB-DIR|IMDB-WIKI-DIR|STS-B-DIR) \| ([^|]+) \| `python train.py ([^`]*)`", section,
                      re.MULTILINE)
    assert len(rows) == 7
    for benchmark, run, flags in rows:
        argv = shlex.split(flags.replace("<stage 1>", "stage1"))
        args = cli.parse(parsers[benchmark](), argv)
        method = re.match(r"\w+", run).group().lower()
        if method == "rnc":             # the paper's two stages (the second trains a head: RnC itself is off)
            assert args.rnc_stage == ("encoder" if "stage 1" in run else "linear") and args.rnc == ("stage 1" in run)
        else:
            assert getattr(args, method) is True, (benchmark, run)
        if "--num_branch" in argv:
            assert args.num_branch == int(argv[argv.index("--num_branch") + 1])


def test_the_reproduce_commands_of_ordinal_entropy_parse():
    """Every command of docs/reproduce.md's Ordinal Entropy section parses with its benchmark's flags, turns the
    method on at the weight it names, and groups STS-B's scores on the 0.1 bins."""
    import re
    import shlex
    from pathlib import Path

    from folders import folder_module

    reproduce = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
    section = reproduce.read_text().split("## Ordinal Entropy (Zhang et al.", 1)[1].split("\n## ", 1)[0]
    parsers = {"AgeDB-DIR": lambda: cli.build_age_parser("t"), "IMDB-WIKI-DIR": lambda: cli.build_age_parser("t"),
               "NYUD2-DIR": lambda: folder_module("nyud2-dir", "train").build_parser(),
               "STS-B-DIR": lambda: folder_module("sts-b-dir", "train").build_parser()}
    rows = re.findall(r"^\| (AgeDB-DIR|IMDB-WIKI-DIR|NYUD2-DIR|STS-B-DIR) \| [^|]+ \| `python train.py ([^`]*)`",
                      section, re.MULTILINE)
    assert len(rows) == 5
    for benchmark, flags in rows:
        args = cli.parse(parsers[benchmark](), shlex.split(flags))
        assert args.ordinal_entropy is True and args.oe_weight == 1.0
        assert args.oe_groups == ("bins" if benchmark == "STS-B-DIR" else "labels")


def test_the_reproduce_commands_of_group_dir_parse_with_its_defaults(capsys):
    """docs/reproduce.md's Group-DIR rows parse with their benchmark's flags, turn it on and keep the authors'
    per-benchmark defaults (σ 0.5 and MSE on AgeDB, σ 1 and L1 on IMDB-WIKI, 5 groups and τ 2 on STS-B)."""
    import re
    import shlex
    from pathlib import Path

    from folders import folder_module

    reproduce = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
    section = reproduce.read_text().split("## Group-DIR (Pu et al.", 1)[1].split("\n## ", 1)[0]
    agedb = folder_module("agedb-dir", "train").AGEDB_DEFAULTS
    parsers = {"AgeDB-DIR": lambda: cli.build_age_parser("t", **agedb),
               "IMDB-WIKI-DIR": lambda: cli.build_age_parser("t"),
               "STS-B-DIR": lambda: folder_module("sts-b-dir", "train").build_parser()}
    rows = re.findall(r"^\| (AgeDB-DIR|IMDB-WIKI-DIR|STS-B-DIR) \| ([^|]+) \| `python train.py ([^`]*)`", section,
                      re.MULTILINE)
    assert len(rows) == 4
    want = {"AgeDB-DIR": (10, 0.5, "mse", 0.07), "IMDB-WIKI-DIR": (10, 1.0, "l1", 0.07), "STS-B-DIR": (5, 1.0, "mse", 2.0)}
    for benchmark, run, flags in rows:
        argv = shlex.split(flags)
        args = cli.parse(parsers[benchmark](), argv)
        assert args.group_dir is True
        groups, sigma, reg_loss, temp = want[benchmark]
        assert (args.groups, args.reg_loss) == (groups, reg_loss)
        if "--group_sigma" not in argv:
            assert (args.group_sigma, args.group_temp) == (sigma, temp)
