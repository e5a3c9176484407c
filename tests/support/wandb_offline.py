"""Reading W&B offline runs (``run-ID.wandb``) back, so tests can check what W&B really holds.

The file is a LevelDB-style log (32 KiB blocks; records with a crc32/length/type header) of
``wandb_internal_pb2.Record`` protobufs after a 7-byte ``:W&B`` header. wandb 0.31 ships no
Python reader for it (its reader moved into the Go core), hence this small one.
"""

from __future__ import annotations

import json
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7  # crc32 (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    out, pending, offset = [], b"", 7
    while offset + HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < HEADER:
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        payload = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == 0 and length == 0:
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
            continue
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric key: [(step, value), ...]} from the run's history records."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in record.history.item
        }
        step = (
            int(record.history.step.num)
            if record.history.HasField("step")
            else int(items.get("_step", 0))
        )
        for key, value in items.items():
            if not key.startswith("_") and isinstance(value, int | float):
                series[key].append((step, float(value)))
    return dict(series)


def run_info(path: Path, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """The run record's identity: id, group, job_type, display name, config keys.

    The file is written by W&B's own core process, which on a loaded machine may append the run
    record a moment after ``finish`` returned in ours: it is read again until the record is
    there, ValueError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        for record in records(path):
            if record.WhichOneof("record_type") == "run":
                run = record.run
                config = {item.key: json.loads(item.value_json) for item in run.config.update}
                return {
                    "id": run.run_id,
                    "group": run.run_group,
                    "job_type": run.job_type,
                    "name": run.display_name,
                    "config": config,
                }
        if time.monotonic() > deadline:
            raise ValueError(f"{path} holds no run record")
        time.sleep(0.2)


def offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))
