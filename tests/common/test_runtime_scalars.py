"""What the engine writes to tensorboard (``runtime.ScalarLogger``), read back from the event file.

The reader (tests/tb_events.py) checks the TFRecord checksums with its own CRC-32C and decodes the payload with
the ``Event`` protobuf bundled in the pinned ``tensorboard_logger`` (protobuf 3.20.3: a protobuf ≥ 4 breaks its
import, which this module would show). The trainer's scalars per run are tested in tests/common/test_trainer.py.
"""
import math

import numpy as np

from common import runtime
from tb_events import crc32c, events, scalars_of_run


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283      # the standard check value of CRC-32C


def test_scalar_logger_writes_float32_values_and_skips_nan(tmp_path):
    logger = runtime.ScalarLogger(tmp_path)
    written = [("train/l1", 0.8125, 0), ("train/l1", 7.123456789, 1), ("val/few/l1", math.nan, 1),
               ("train/lr", 2.5e-4, 1)]
    for tag, value, step in written:
        logger.log(tag, value, step)
    logger.close()
    assert events(tmp_path)[0].file_version == "brain.Event:2"
    scalars = scalars_of_run(tmp_path)
    # NaN (an empty shot group) is not a point to plot: not written.
    assert set(scalars) == {"train/l1", "train/lr"}
    assert scalars["train/l1"] == [(0, 0.8125), (1, float(np.float32(7.123456789)))]
    assert scalars["train/lr"] == [(1, float(np.float32(2.5e-4)))]


def test_scalar_logger_is_silent_without_a_folder(tmp_path):
    logger = runtime.ScalarLogger(None)
    logger.log("train/l1", 1.0, 0)
    logger.close()
    assert list(tmp_path.iterdir()) == []
