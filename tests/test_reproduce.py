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


def test_the_reproduce_commands_of_dist_loss_parse():
    """Every command of docs/reproduce.md's Dist Loss section parses with its benchmark's flags: the authors'
    protocol (batch 512, inverse weights, balanced-MAE selection) with the term on, and its λ = 0 base without it."""
    import re
    import shlex
    from pathlib import Path

    from folders import folder_module

    reproduce = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
    section = reproduce.read_text().split("## Dist Loss (Nie, Tang, Hong", 1)[1].split("\n## ", 1)[0]
    parsers = {"AgeDB-DIR": lambda: cli.build_age_parser("t", dataset="agedb"),
               "IMDB-WIKI-DIR": lambda: cli.build_age_parser("t"),
               "NYUD2-DIR": lambda: folder_module("nyud2-dir", "train").build_parser(),
               "STS-B-DIR": lambda: folder_module("sts-b-dir", "train").build_parser()}
    rows = re.findall(r"^\| (AgeDB-DIR|IMDB-WIKI-DIR|NYUD2-DIR|STS-B-DIR) \| ([^|]+) \| `python train.py ([^`]*)`",
                      section, re.MULTILINE)
    assert len(rows) == 7
    for benchmark, run, flags in rows:
        args = cli.parse(parsers[benchmark](), shlex.split(flags))
        assert args.reweight == "inverse"
        assert args.dist_loss == ("stage 1" not in run), run
        if benchmark in ("AgeDB-DIR", "IMDB-WIKI-DIR"):
            assert args.batch_size == 512 and args.loss == "l1"
            assert args.select_on == ("bmae" if args.dist_loss else None)
            assert args.retrain_fc == ("stage 2" in run)
        if args.dist_loss:
            assert (args.distribution_loss_term_weight, args.regularization_strength, args.bw_method) == (1, 0.1, 0.5)
