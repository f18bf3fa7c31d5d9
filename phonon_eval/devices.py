"""One accelerator per evaluation worker on a GPU host.

JAX (and PyTorch) take every visible GPU and, by default, 75 % of its memory: two workers on one
host would fight over the first device. Each worker of a local Dask cluster is therefore shown
one GPU only, round robin, before anything in it starts JAX; `fanout.worker_environment` turns
the preallocation off.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["OneDevicePerWorker", "gpu_ids"]


def gpu_ids() -> list[str]:
    """This host's GPUs: CUDA_VISIBLE_DEVICES when it is set, else what `nvidia-smi -L` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(k) for k, _ in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


class OneDevicePerWorker(WorkerPlugin):
    """Worker k sees GPU devices[k % len(devices)] only.

    It runs when the worker registers, before the model reaches it, hence before JAX starts
    there and reads CUDA_VISIBLE_DEVICES.
    """

    name = "pft-one-device-per-worker"

    def __init__(self, devices: Sequence[str]):
        if not devices:
            raise ValueError("no devices to share out")
        self.devices = list(devices)

    def setup(self, worker: Any) -> None:
        index = int(worker.name) if str(worker.name).isdigit() else sum(map(ord, str(worker.name)))
        os.environ["CUDA_VISIBLE_DEVICES"] = self.devices[index % len(self.devices)]
