"""Block-wise offload of the DiT (``engine.flashtalk.memory: offload``): one or two blocks on the GPU at a time.

The 40 blocks hold 98 % of the DiT's weights but run one after the other, so each block's tensors live in one flat
page-locked (pinned) host buffer and are copied to the GPU just before the block runs, as one DMA; while block i
computes, block i+1 is already being copied on a side CUDA stream (the compute stream waits for that copy with an
event, not the host), and block i's copy is dropped when it returns. The GPU holds the embeddings, head and audio
projection (0.31 B parameters) and at most two blocks. The cost is PCIe traffic: a whole DiT's weights per forward
(37 GB in bf16, 19 GB with FP8 weights), hidden behind compute when a step takes longer than the copies.

* One flat buffer per block: one copy per block instead of ~25, and one pinned allocation (the CUDA host caching
  allocator rounds every allocation up to a power of two, which per tensor would waste up to half of it).
* The device copy is allocated on the side stream and used on the compute stream, so it is marked with
  ``record_stream``: the allocator does not hand its memory out again before the compute that read it is done.
* Use of a block's layers outside the block's forward (the session's cross-attention K/V precompute,
  ``WanAudioTransformer.context_kv``) loads that block on demand (synchronously) and frees it at the next block
  change, so at most two blocks are ever on the device.
* On the CPU the "device" is the CPU: the copy is a clone into a separate buffer and streams are no-ops, so tests
  run the real code path and can tell a block's host storage from its device copy by storage identity.
  With ``record=True`` every placement change is logged (:class:`PlacementEvent`) for tests and debugging.

Why not diffusers' ``apply_group_offloading`` (block-level, ``use_stream=True``), which does this for a generic
``nn.Module``: diffusers is not a dependency of the engine (it would come with its own model-loading stack for ~200
lines of hooks), its stream mode learns the execution order from a first traced forward while our DiT's order is
fixed and explicit (``for block in self.blocks``), and the tests here need to see where every tensor is at each
step. Not compatible with ``torch.compile`` of the blocks (the swaps would be traced); the builder refuses that.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["BlockOffloader", "PlacementEvent", "offload_dit"]

log = logging.getLogger(__name__)

_ALIGN = 64  # bytes: every tensor in a flat buffer starts aligned for any dtype and vectorised copies
Action = Literal["copy", "enter", "exit", "on_demand", "release"]


@dataclass(frozen=True)
class PlacementEvent:
    """One placement change: ``block`` got a device copy (``copy``), started or finished its forward (``enter``,
    ``exit``: its device copy is dropped), or was loaded for / released from use outside its forward."""

    block: int
    action: Action
    on_device: tuple[int, ...]  # blocks holding a device copy after the change


@dataclass(frozen=True)
class _Slot:
    """Where one parameter or buffer of a block lives inside the block's flat buffer."""

    module: nn.Module
    name: str
    is_param: bool
    offset: int
    dtype: torch.dtype
    shape: torch.Size

    @property
    def nbytes(self) -> int:
        return self.shape.numel() * self.dtype.itemsize


def _slots(block: nn.Module) -> tuple[list[_Slot], int]:
    """Every parameter and buffer of ``block`` with its aligned offset; the total size in bytes."""
    slots, offset = [], 0
    for module in block.modules():
        tensors = [(n, t, True) for n, t in module._parameters.items() if t is not None]
        tensors += [(n, t, False) for n, t in module._buffers.items() if t is not None]
        for name, tensor, is_param in tensors:
            slots.append(_Slot(module, name, is_param, offset, tensor.dtype, tensor.shape))
            offset += -(-tensor.numel() * tensor.element_size() // _ALIGN) * _ALIGN
    return slots, offset


def _views(flat: torch.Tensor, slots: list[_Slot]) -> list[torch.Tensor]:
    return [flat[s.offset : s.offset + s.nbytes].view(s.dtype).view(s.shape) for s in slots]


def _assign(slots: list[_Slot], tensors: list[torch.Tensor]) -> None:
    """Point every slot's module attribute at ``tensors`` (parameters keep their identity: ``.data`` is swapped)."""
    for slot, tensor in zip(slots, tensors):
        if slot.is_param:
            slot.module._parameters[slot.name].data = tensor  # type: ignore[union-attr]
        else:
            slot.module._buffers[slot.name] = tensor


class _BlockStore:
    """A block's tensors in one flat host buffer (pinned when the device is a GPU)."""

    def __init__(self, block: nn.Module, pin: bool) -> None:
        self.slots, size = _slots(block)
        self.host = torch.empty(size, dtype=torch.uint8, pin_memory=pin)
        views = _views(self.host, self.slots)
        for slot, view in zip(self.slots, views):
            source = getattr(slot.module, slot.name)
            view.copy_(source.detach())
        _assign(self.slots, views)  # the original tensors (wherever they were) are released here


class BlockOffloader:
    """Keeps ``blocks`` in host memory and streams each onto ``device`` around its forward (see the module doc)."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device | str, *, record: bool = False) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self._stores = [_BlockStore(block, pin=cuda) for block in blocks]
        self._copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._copies: dict[int, tuple[torch.Tensor, Any]] = {}  # block -> (device flat buffer, copy-done event)
        self._assigned: set[int] = set()  # blocks whose modules point at their device copy
        self._on_demand: int | None = None
        self._record = record
        self.events: list[PlacementEvent] = []
        self._handles = [h for i, block in enumerate(blocks) for h in self._hook(i, block)]
        log.info("offload: %d DiT blocks in %s host memory (%.2f GB), streamed to %s one block ahead",
                 len(blocks), "pinned" if cuda else "plain", self.host_bytes() / 1e9, self.device)

    # -- state, for tests and the memory report ------------------------------------------------------------------
    def on_device(self) -> tuple[int, ...]:
        """Blocks that hold a device copy now (running, prefetched or loaded on demand)."""
        return tuple(sorted(self._copies))

    def device_bytes(self) -> int:
        """Bytes of block weights on the device now."""
        return sum(flat.numel() for flat, _ in self._copies.values())

    def host_bytes(self) -> int:
        return sum(store.host.numel() for store in self._stores)

    def host_pinned(self, block: int) -> bool:
        return self._stores[block].host.is_pinned()

    def host_storage(self, block: int) -> torch.Tensor:
        """The flat host buffer of ``block`` (tests compare storages against it)."""
        return self._stores[block].host

    def remove(self) -> None:
        """Drop the hooks and device copies; the blocks stay in host memory."""
        for handle in self._handles:
            handle.remove()
        for block in list(self._copies):
            self._drop(block)

    # -- hooks -----------------------------------------------------------------------------------------------------
    def _hook(self, index: int, block: nn.Module) -> Iterator[Any]:
        yield block.register_forward_pre_hook(lambda _m, _a: self._enter(index))
        yield block.register_forward_hook(lambda _m, _a, _o: self._exit(index))
        for module in block.modules():
            if module is not block and (module._parameters or module._buffers):
                yield module.register_forward_pre_hook(lambda _m, _a: self._use(index))

    def _enter(self, index: int) -> None:
        if self._on_demand is not None and self._on_demand != index:
            self._release_on_demand()
        self._on_demand = None
        self._load(index)
        self._log(index, "enter")
        self._prefetch((index + 1) % len(self._stores))

    def _exit(self, index: int) -> None:
        self._drop(index)
        self._log(index, "exit")

    def _use(self, index: int) -> None:
        """A layer of block ``index`` is called: nothing to do inside the block's forward, else load on demand."""
        if index in self._assigned:
            return
        self._release_on_demand()
        self._load(index)
        self._on_demand = index
        self._log(index, "on_demand")

    def _release_on_demand(self) -> None:
        if self._on_demand is not None:
            block, self._on_demand = self._on_demand, None
            self._drop(block)
            self._log(block, "release")

    # -- copies ----------------------------------------------------------------------------------------------------
    def _prefetch(self, index: int) -> None:
        if index in self._copies:
            return
        store = self._stores[index]
        if self._copy_stream is None:  # CPU: a plain copy into a separate buffer
            self._copies[index] = (store.host.to(self.device, copy=True), None)
        else:
            with torch.cuda.stream(self._copy_stream):
                flat = store.host.to(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(self._copy_stream)
            self._copies[index] = (flat, done)
        self._log(index, "copy")

    def _load(self, index: int) -> None:
        """Make block ``index``'s modules use its device copy (copied now unless prefetched)."""
        if index in self._assigned:
            return
        self._prefetch(index)
        flat, done = self._copies[index]
        if done is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(done)  # the GPU waits for the copy; the host does not
            flat.record_stream(compute)
        _assign(self._stores[index].slots, _views(flat, self._stores[index].slots))
        self._assigned.add(index)

    def _drop(self, index: int) -> None:
        """Point block ``index`` back at its host buffer and let its device copy go."""
        store = self._stores[index]
        if index in self._assigned:
            _assign(store.slots, _views(store.host, store.slots))
            self._assigned.discard(index)
        self._copies.pop(index, None)

    def _log(self, block: int, action: Action) -> None:
        if self._record:
            self.events.append(PlacementEvent(block, action, self.on_device()))


def offload_dit(transformer: nn.Module, device: torch.device | str, *, record: bool = False) -> BlockOffloader:
    """Put everything of ``transformer`` but its blocks on ``device`` and offload the blocks (:class:`BlockOffloader`).

    The offloader is kept as ``transformer.offloader`` (not state: ``state_dict`` is unchanged).
    """
    device = torch.device(device)
    for name, child in transformer.named_children():
        if name != "blocks":
            child.to(device)
    offloader = BlockOffloader(transformer.blocks, device, record=record)  # type: ignore[arg-type]
    transformer.offloader = offloader
    return offloader
