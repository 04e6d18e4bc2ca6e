"""The two exceptions the repo's code raises for problems a user can fix.

:class:`RunError` is printed as its one sentence by every ``train.py`` (``common.trainer.run``);
:class:`NonFiniteError` is what the losses, FDS and the trainer raise when a tensor holds NaN or ±inf, so the
trainer can tell a diverged run from any other ``ValueError`` without reading the message.
"""


class RunError(Exception):
    """A problem the user can fix (bad path, corrupt file, non-finite loss): printed as one sentence."""


class NonFiniteError(ValueError):
    """A tensor (features, predictions, a loss) holds NaN or ±inf: the run diverged or the data are broken."""
