"""TensorBoard event files in the workdir, next to metrics.jsonl.

Writes with tensorboardX's event-file writer and protobufs (no TensorFlow): one
scalar per numeric field of each metrics record, tagged with the record's key,
at the record's `step`. So `tensorboard --logdir WORKDIR` shows exactly what
metrics.jsonl holds: loss, lr, grad_norm, tokens_per_sec, mfu, eval_loss, RL
rewards, ...
A resumed run first writes a SessionLog START event at the first step it will
log again; TensorBoard then drops the earlier files' points from that step on
(points logged by a run that died before checkpointing them), as
metrics.jsonl's `truncate_after` does.
`read_scalars` parses the files back with tensorboardX's protobufs (tests, tools),
with the same purge rule.
"""
from __future__ import annotations

import glob
import os
import struct
import time
from typing import Any


def _scalar(v: Any) -> float | None:
  if isinstance(v, bool):
    return float(v)
  if isinstance(v, (int, float)):
    return float(v)
  return None


class TensorBoardWriter:
  """Synchronous: one event per record, on disk when `write` returns.

  tensorboardX's SummaryWriter queues events for a background thread, so a
  run that crashes can lose its last points; a log step is rare enough to
  write and flush in line.
  """

  def __init__(self, logdir: str):
    from tensorboardX.event_file_writer import EventsWriter

    os.makedirs(logdir, exist_ok=True)
    # The name carries seconds only; a nanosecond suffix keeps a restart within the same
    # second from overwriting the previous file, and keeps names in time order.
    self._w = EventsWriter(os.path.join(logdir, "events"), filename_suffix=f".{time.time_ns():020d}.{os.getpid()}")

  def write(self, record: dict[str, Any]) -> None:
    from tensorboardX.proto import event_pb2, summary_pb2

    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in
              ((k, _scalar(v)) for k, v in record.items() if k != "step") if v is not None]
    if values:
      self._w.write_event(event_pb2.Event(wall_time=time.time(), step=int(record.get("step", 0)),
                                          summary=summary_pb2.Summary(value=values)))
      self._w.flush()

  def purge_from(self, step: int) -> None:
    """TensorBoard drops points at steps >= `step` logged before this event."""
    from tensorboardX.proto import event_pb2

    self._w.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._w.flush()

  def close(self) -> None:
    self._w.close()


def _records(path: str):
  """TFRecord framing: uint64 length, uint32 crc, payload, uint32 crc."""
  with open(path, "rb") as f:
    while header := f.read(12):
      (n,) = struct.unpack("<Q", header[:8])
      payload = f.read(n)
      f.read(4)
      yield payload


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} over every event file in `logdir`, in file order."""
  from tensorboardX.proto import event_pb2

  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for payload in _records(path):
      event = event_pb2.Event.FromString(payload)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        out = {tag: [(st, x) for st, x in pts if st < event.step] for tag, pts in out.items()}
      for v in event.summary.value:
        if v.HasField("simple_value"):
          out.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
  return out
