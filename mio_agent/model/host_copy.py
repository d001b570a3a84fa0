"""The id a decode step chose, copied to the host: into pinned memory and asynchronously on CUDA."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HostCopy"]


class HostCopy:
    """`to_host` starts the copy of a chosen id (a [1] device tensor); `read_host` waits for it.

    On CUDA the copy goes to pinned memory without blocking, so the host can queue the next step
    before it reads the id; elsewhere it is a plain copy."""

    def __init__(self, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.host_token = torch.zeros(1, dtype=torch.long, pin_memory=pinned)
        self._copied: Any = torch.cuda.Event() if pinned else None  # type: ignore[no-untyped-call]

    def to_host(self, token: torch.Tensor) -> None:
        """Start copying a chosen id to the host (asynchronous on CUDA)."""
        self.host_token.copy_(token, non_blocking=self._copied is not None)
        if self._copied is not None:
            self._copied.record()

    def read_host(self) -> int:
        """The id `to_host` copied, once it has arrived."""
        if self._copied is not None:
            self._copied.synchronize()
        return int(self.host_token[0])
