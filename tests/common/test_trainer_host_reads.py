"""No training step waits for the device: every method of the list on every benchmark's synthetic data trains with
zero operations that read a tensor to the host (issue 30). On a GPU each such read
stalls the step until the device has caught up; counted here on CPU by :class:`host_reads.HostReads`.

The run is stopped after two steps of its second epoch, so FDS (and VIR's probabilistic FDS) steps are counted
with their smoothing on, after an epoch's statistics.
"""
import pytest

from common import methods
from common.trainer import Trainer
from host_reads import HostReads
from test_method_runs import data, train  # noqa: F401 (data: the synthetic data fixture)

pytestmark = pytest.mark.slow

#: each method of the list at flags that exercise it (and a stack), the run's smoothing starting at epoch 1.
FDS_EARLY = ["--start_update", "0", "--start_smooth", "1"]
CONFIGS = {
    "vanilla": [],
    "reweight": ["--reweight", "sqrt_inv", "--lds"],
    "fds": ["--fds", *FDS_EARLY],
    "bmse": ["--bmse", "--imp", "bni"],
    "ranksim": ["--regularization_weight", "100", "--interpolation_lambda", "2"],
    "conr": ["--conr"],
    "srl": ["--srl"],
    "rnc": ["--rnc"],
    "uvote": ["--uvote", "--dynamic_loss", "--lds"],
    "vir": ["--vir", "--fds", "--reweight", "sqrt_inv", "--lds", *FDS_EARLY],
    "dist": ["--dist_loss", "--reweight", "inverse"],
    "group_dir": ["--group_dir", "--groups", "4", "--ce", "--reweight", "sqrt_inv", "--lds"],
    "ordinal_entropy": ["--ordinal_entropy"],
    "accon": ["--accon"],
    "bsam": ["--bsam", "--fds", *FDS_EARLY, "--stats_from_training"],    # both passes, features recorded once
    "head_start": ["--head_start", "labels"],
    "rrt": ["--retrain_fc", "--reweight", "sqrt_inv"],        # on a first run's checkpoint (--pretrained)
    "stack": ["--reweight", "inverse", "--lds", "--fds", *FDS_EARLY, "--conr", "--regularization_weight", "2",
              "--srl"],
}


class Enough(Exception):
    """Stops the run once the counted steps are done."""


def test_every_method_of_the_list_is_counted():
    assert {method.name for method in methods.METHODS} <= set(CONFIGS)


# Every benchmark: the ages' two folders share their step but not their data; NYUD2-DIR's is per pixel; STS-B-DIR's
# packed BiLSTM keeps its sentence lengths on the host, where `pack_padded_sequence` reads them.
CASES = [(folder, config) for folder in ("agedb-dir", "imdb-wiki-dir", "nyud2-dir", "sts-b-dir")
         for config in CONFIGS]


@pytest.mark.parametrize("folder, config", CASES)
def test_a_training_step_reads_nothing_to_the_host(folder, config, data, tmp_path, monkeypatch):
    flags = list(CONFIGS[config])
    if folder == "nyud2-dir":       # NYUD2 collects its statistics on a subset of its own: no such flag
        flags = [flag for flag in flags if flag != "--stats_from_training"]
    if config == "rrt":
        train(folder, data, tmp_path, "first")
        flags += ["--pretrained", str(tmp_path / "first" / "ckpt.best.pth.tar")]
    step_of = Trainer.train_step
    reads, steps = HostReads(), []

    def counted(self, batch, epoch, step, meters):
        with reads:
            step_of(self, batch, epoch, step, meters)
        steps.append((epoch, step))
        if epoch == 1 and step == 1:
            raise Enough

    monkeypatch.setattr(Trainer, "train_step", counted)
    try:
        # STS-B-DIR's runs end after --max_vals validations: enough of them to reach the second epoch.
        more = ["--max_vals", "100"] if folder == "sts-b-dir" else []
        train(folder, data, tmp_path, "run", *flags, *more, "--print_freq", "1000")
    except Enough:
        pass
    assert any(epoch == 1 for epoch, _ in steps) and len(steps) >= 2, steps     # smoothing steps were counted
    assert reads.count == 0, f"{folder} {config}: {dict(reads.counts)} at {reads.where}"
