"""Data parallel training over the processes that `accelerate launch` (or torchrun) starts.

    accelerate launch --multi_gpu --num_processes 2 -m rlhf_core worker    # two GPUs of one machine
    torchrun --nproc_per_node 2 -m rlhf_core worker                        # two CPU processes (gloo)

(`accelerate launch --cpu` starts one process, whatever `--num_processes` says.)

Every process holds the whole model stack and reads the same data in the same seeded order; each
takes its shard of every batch, and the gradients are summed across processes before the optimizer
step, with each process's loss normalised by the whole batch. So all processes make the same update,
the adapters stay identical, and the result equals one process training on the full batches (up to
floating-point summation order). Policy updates shard the step's prompts for generation, scoring and
the log-prob passes, gather the rollout so every process computes the same advantages, and then
split each minibatch the same way. Only the main process writes to the database and to disk. With no
launcher, `DataParallel()` is one process and every method is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class DataParallel:
    """Who this process is among the training processes, and the few collectives training needs."""

    def __init__(self, *, single: bool = False) -> None:
        """The processes of this launch (from the launcher's environment), or just this one (`single`)."""
        env = {} if single else os.environ
        self.world = int(env.get("WORLD_SIZE", "1"))
        self.rank = int(env.get("RANK", "0"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            from accelerate import PartialState

            # accelerate picks the backend: NCCL between GPUs, gloo between CPU processes.
            PartialState(cpu=not torch.cuda.is_available())

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def close(self) -> None:
        """Leave the process group (after a barrier), so no collective's thread is torn down mid-exit
        (gloo aborts the process with "terminate called without an active exception" otherwise)."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's GPU when the stack would use CUDA; otherwise `device` unchanged."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of a batch: items rank, rank + world, ..."""
        return list(items[self.rank::self.world])

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each gradient by its sum over the processes (a missing one counts as zeros)."""
        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)

    def sum(self, value: float) -> float:
        return self.sums({"value": value})["value"]

    def sums(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the processes, in one collective."""
        if not self.enabled:
            return dict(values)
        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return dict(zip(values, tensor.tolist(), strict=True))

    def sampling_generator(self, device: torch.device, seed: int) -> torch.Generator | None:
        """A random stream of this process's own for sampling (so the processes do not draw the same
        numbers for different prompts); None with one process, which keeps torch's global generator."""
        return torch.Generator(device=device).manual_seed(seed * 7919 + self.rank) if self.enabled else None

    def gather(self, items: Sequence[T]) -> list[T]:
        """Every process's `items`, concatenated in rank order, on every process (picklable objects)."""
        if not self.enabled:
            return list(items)
        boxes: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(boxes, list(items))
        return [item for box in boxes for item in box]

    def broadcast(self, obj: Any) -> Any:
        """The main process's `obj`, on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()
