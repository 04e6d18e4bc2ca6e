"""RRT's command line (common/rrt.py): --retrain_fc without a balanced objective is said, not refused."""
from test_cli import agedb


def test_rrt_without_a_balanced_objective_is_a_warning(capsys):
    """The NYUD2 and STS-B references run RRT on any loss: accepted on every benchmark, with one warning line;
    with --reweight or --bmse nothing is said."""
    args = agedb("--retrain_fc --pretrained x")
    assert args.retrain_fc and args.reweight == "none"
    assert capsys.readouterr().err == ("warning: --retrain_fc without --reweight or --bmse retrains on the unweighted "
                                       "loss, which does not rebalance the head (RRT is meant for a balanced "
                                       "objective).\n")
    for line in ("--retrain_fc --pretrained x --reweight sqrt_inv", "--retrain_fc --pretrained x --bmse"):
        agedb(line)
        assert capsys.readouterr().err == ""
