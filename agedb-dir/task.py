"""AgeDB-DIR as a task of the shared trainer: the age base (``common/age.py``) on this folder's data, network and
objective (``dataset.py``, ``resnet.py``, ``loss.py``)."""
import dataset
import loss
import resnet
from common.age import AgeTask


class AgeDBTask(AgeTask):
    benchmark = "agedb-dir"
    published_split = dataset.PUBLISHED_SPLIT

    def load_frame(self):
        return dataset.load_frame(self.args.data_dir, self.args.dataset)

    def build_network(self, fds):
        return resnet.build_model(self.args, fds)

    def build_loss(self, gmm_file, bni_prior, label_counts):
        return loss.build_objective(self.args, gmm_file, bni_prior, label_counts, self.train_labels)
