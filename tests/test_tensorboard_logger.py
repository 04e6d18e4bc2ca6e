"""The pinned ``tensorboard_logger`` (with protobuf 3.20.3) imports and writes readable scalar events.

The event file is read back without TensorFlow/TensorBoard: TFRecord framing parsed here (8-byte little-endian
length, 4-byte masked CRC-32C of the length, payload, 4-byte masked CRC-32C of the payload), the checksums
recomputed with a CRC-32C written here, and the payload decoded with the Event protobuf shipped inside
``tensorboard_logger/tf_protobuf``.
"""
import glob
import os
import struct

import numpy as np
import tensorboard_logger  # must import: a protobuf >= 4 would break it (requirements.txt pins 3.20.3)
from tensorboard_logger.tf_protobuf import event_pb2


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc32c_known_value():
    # the standard check value of CRC-32C
    assert _crc32c(b"123456789") == 0xE3069283


def _read_records(path):
    records = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert header_crc == _masked(_crc32c(header))
        payload = data[pos + 12:pos + 12 + length]
        assert len(payload) == length
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert payload_crc == _masked(_crc32c(payload))
        records.append(payload)
        pos += 16 + length
    assert pos == len(data)
    return records


def _events(logdir):
    files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert len(files) == 1
    events = []
    for payload in _read_records(files[0]):
        event = event_pb2.Event()
        event.ParseFromString(payload)
        events.append(event)
    return events


def _scalars(events):
    out = []
    for e in events:
        if e.HasField("summary"):
            for v in e.summary.value:
                out.append((v.tag, v.simple_value, e.step))
    return out


WRITTEN = [("loss/train", 0.8125, 0), ("loss/train", 0.3125, 3), ("lr", 2.5e-4, 3), ("val/mae", 7.123456789, 10)]


def test_logger_writes_readable_scalars(tmp_path):
    logdir = str(tmp_path / "run")
    logger = tensorboard_logger.Logger(logdir, flush_secs=2)
    for tag, value, step in WRITTEN:
        logger.log_value(tag, value, step=step)
    events = _events(logdir)
    assert events[0].file_version == "brain.Event:2"
    got = _scalars(events)
    assert [(t, s) for t, _, s in got] == [(t, s) for t, _, s in WRITTEN]
    for (_, v, _), (_, expected, _) in zip(got, WRITTEN):
        assert v == float(np.float32(expected))  # simple_value is a float32 field
    for e in events[1:]:
        assert e.wall_time > 0


def test_module_level_configure_and_log_value(tmp_path, monkeypatch):
    # the module keeps one global default logger; start from none and leave none behind
    monkeypatch.setattr(tensorboard_logger.tensorboard_logger, "_default_logger", None)
    logdir = str(tmp_path / "default")
    tensorboard_logger.configure(logdir)
    tensorboard_logger.log_value("train/loss", 1.5, step=7)
    tensorboard_logger.log_value("train/loss", -0.25, step=8)
    assert _scalars(_events(logdir)) == [("train/loss", 1.5, 7), ("train/loss", -0.25, 8)]
