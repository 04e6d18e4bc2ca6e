"""IMDB-WIKI-DIR as a task of the shared trainer: the age base (``common/age.py``) on this folder's files."""
import dataset
import loss
import resnet
from common.age import AgeTask


class IMDBWikiTask(AgeTask):
    """The age task on ``imdb_wiki.csv`` (ages 0–200), its ResNet (``resnet.py``) and objective (``loss.py``)."""
    benchmark = "imdb-wiki-dir"
    published_split = dataset.PUBLISHED_SPLIT
    load_frame = lambda self: dataset.load_frame(self.args.data_dir, self.args.dataset)   # noqa: E731
    build_network = lambda self, fds: resnet.build_model(self.args, fds)                  # noqa: E731
    build_loss = lambda self, gmm_file, bni_prior, label_counts: loss.build_objective(  # noqa: E731
        self.args, gmm_file, bni_prior, label_counts, self.train_labels)
