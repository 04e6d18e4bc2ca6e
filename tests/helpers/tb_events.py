"""Read the scalars of a tensorboard event file without TensorFlow/TensorBoard.

TFRecord framing is parsed here (8-byte little-endian length, 4-byte masked CRC-32C of the length, payload,
4-byte masked CRC-32C of the payload), the checksums are recomputed with a CRC-32C written here, and each
payload is decoded with the ``Event`` protobuf shipped inside ``tensorboard_logger/tf_protobuf``.
"""
import glob
import os
import struct
from collections import defaultdict

from tensorboard_logger.tf_protobuf import event_pb2


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert header_crc == masked(crc32c(header)), f"{path}: corrupt record header at byte {pos}"
        payload = data[pos + 12:pos + 12 + length]
        assert len(payload) == length, f"{path}: truncated record at byte {pos}"
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert payload_crc == masked(crc32c(payload)), f"{path}: corrupt record payload at byte {pos}"
        records.append(payload)
        pos += 16 + length
    return records


def events(logdir) -> list:
    files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert len(files) == 1, f"expected one event file in {logdir}, found {len(files)}"
    out = []
    for payload in read_records(files[0]):
        event = event_pb2.Event()
        event.ParseFromString(payload)
        out.append(event)
    return out


def scalars_of_run(logdir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` in the order written."""
    scalars = defaultdict(list)
    for event in events(logdir):
        if event.HasField("summary"):
            for value in event.summary.value:
                scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)
