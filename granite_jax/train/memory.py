"""Device memory in use and its peak, for the metrics of a log step, where the backend reports it
(GPU, TPU; XLA's CPU client reports nothing, and then nothing is logged). The fullest of this
process's devices is the one that runs out first, so each field is the max over them."""
from __future__ import annotations

import jax

GIB = 1024 ** 3
FIELDS = (("memory/in_use_gib", "bytes_in_use"), ("memory/peak_gib", "peak_bytes_in_use"),
          ("memory/limit_gib", "bytes_limit"))


class DeviceMemory:
  def __init__(self, devices=None):
    self._devices = devices
    self._reported = True  # until a backend says it has nothing

  def fields(self) -> dict[str, float]:
    if not self._reported:
      return {}
    stats = []
    for d in self._devices or jax.local_devices():
      try:
        s = d.memory_stats()
      except Exception:  # noqa: BLE001 - a backend without the call
        s = None
      if s:
        stats.append(s)
    if not stats:
      self._reported = False  # asked once: the backend does not say
      return {}
    return {name: max(s[key] for s in stats) / GIB for name, key in FIELDS if all(key in s for s in stats)}
