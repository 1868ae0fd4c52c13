"""Block-wise DiT offload (engine.ops.offload) on the CPU: the golden DiT gives the resident output bit for bit, and
where every block's tensors live is asserted at every block of a forward and of the cross-attention K/V precompute.

On the CPU the "device" is the CPU: a block's device copy is a clone in a separate buffer, so "on the device" is
checked by storage identity (a module tensor inside the block's host buffer = offloaded, anywhere else = the device
copy). No fake device is involved. Pinning and the side stream need CUDA: the last test runs only on a GPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from golden_support import require_case
from safetensors.torch import load_file
from torch import nn

from engine.loading.dit import load_dit
from engine.models.transformer import WanAudioTransformer
from engine.ops.offload import BlockOffloader, PlacementEvent, offload_dit

CASE = "dit_forward__a"


def golden_dit(golden_dir: Path, case: str = CASE) -> tuple[WanAudioTransformer, dict[str, torch.Tensor]]:
    """The golden bundle's tiny DiT (float32) and the case's inputs (skipped when the located bundle lacks it)."""
    require_case(golden_dir, case)
    folder = golden_dir / "cases" / case
    model_dir = golden_dir / json.loads((folder / "meta.json").read_text())["models"]["dit"]
    return load_dit(model_dir), load_file(str(folder / "inputs.safetensors"))


def golden_forward(model: nn.Module, inputs: dict[str, torch.Tensor], **options: object) -> torch.Tensor:
    """The golden case's forward (batch 1), as engine.refcheck.tasks_dit runs it."""
    with torch.inference_mode():
        return model(inputs["x"].float().unsqueeze(0), inputs["t"].float().reshape(1),
                     inputs["context"].float().unsqueeze(0), inputs["clip_fea"].float(), inputs["y"].float(),
                     inputs["audio"].float(), seq_len=int(inputs["seq_len"].reshape(-1)[0]), **options)[0]


def _in_host_buffer(tensor: torch.Tensor, offloader: BlockOffloader, block: int) -> bool:
    host = offloader.host_storage(block)
    start = host.data_ptr()
    return start <= tensor.data_ptr() < start + host.numel()


def _placement(model: WanAudioTransformer, offloader: BlockOffloader) -> list[str]:
    """Per block: "host" when every tensor is in its host buffer, "device" when none is."""
    states = []
    for i, block in enumerate(model.blocks):
        inside = {_in_host_buffer(t, offloader, i) for t in [*block.parameters(), *block.buffers()]}
        states.append({frozenset({True}): "host", frozenset({False}): "device"}.get(frozenset(inside), "mixed"))
    return states


def test_offloaded_forward_is_the_resident_forward(golden_dir: Path) -> None:
    resident, inputs = golden_dit(golden_dir)
    expected = golden_forward(resident, inputs)
    model, _ = golden_dit(golden_dir)
    offload_dit(model, "cpu")
    assert torch.equal(golden_forward(model, inputs), expected)  # same maths, same order: bit-identical
    assert torch.equal(golden_forward(model, inputs), expected)  # the second call starts from the prefetched block 0


def test_where_every_block_lives_at_each_step(golden_dir: Path) -> None:
    model, inputs = golden_dit(golden_dir)
    offloader = offload_dit(model, "cpu", record=True)
    n = len(model.blocks)
    assert _placement(model, offloader) == ["host"] * n and offloader.on_device() == ()
    assert all(p.device.type == "cpu" for name, p in model.named_parameters() if not name.startswith("blocks."))
    seen: list[tuple[int, list[str], tuple[int, ...], int]] = []
    for i, block in enumerate(model.blocks):  # inside the block's forward, between its layers
        block.ffn.register_forward_pre_hook(
            lambda _m, _a, i=i: seen.append((i, _placement(model, offloader), offloader.on_device(),
                                             offloader.device_bytes())))
    golden_forward(model, inputs)
    block_bytes = [offloader.host_storage(i).numel() for i in range(n)]
    for i, placement, on_device, device_bytes in seen:
        assert placement == ["device" if j == i else "host" for j in range(n)], i  # only the running block
        assert on_device == tuple(sorted({i, (i + 1) % n})), i  # ... and the next one, prefetched
        assert device_bytes == sum(block_bytes[j] for j in on_device)
    assert [i for i, *_ in seen] == list(range(n))
    assert _placement(model, offloader) == ["host"] * n and offloader.on_device() == (0,)  # block 0 for the next call
    assert offloader.events == [
        PlacementEvent(0, "copy", (0,)), PlacementEvent(0, "enter", (0,)), PlacementEvent(1, "copy", (0, 1)),
        PlacementEvent(0, "exit", (1,)), PlacementEvent(1, "enter", (1,)), PlacementEvent(0, "copy", (0, 1)),
        PlacementEvent(1, "exit", (0,)),
    ]


def test_layers_used_outside_the_block_forward_load_on_demand(golden_dir: Path) -> None:
    resident, inputs = golden_dit(golden_dir)
    context, clip = inputs["context"].float().unsqueeze(0), inputs["clip_fea"].float()
    with torch.inference_mode():
        expected = resident.context_kv(context, clip)
    model, _ = golden_dit(golden_dir)
    offloader = offload_dit(model, "cpu", record=True)
    with torch.inference_mode():
        cross = model.context_kv(context, clip)  # calls block.cross_attn.project, not block.forward
    for got, want in zip(cross.kv, expected.kv):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert [(e.block, e.action) for e in offloader.events if e.action in ("on_demand", "release")] == [
        (0, "on_demand"), (0, "release"), (1, "on_demand")]
    assert max(len(e.on_device) for e in offloader.events) <= 2
    assert _placement(model, offloader) == ["host", "device"]  # the last one stays until the next block change
    out = golden_forward(model, inputs, cross=cross)
    assert torch.equal(out, golden_forward(resident, inputs, cross=expected))
    assert _placement(model, offloader) == ["host", "host"]


def test_host_buffers_and_removal(golden_dir: Path) -> None:
    model, inputs = golden_dit(golden_dir)
    expected = golden_forward(model, inputs)
    offloader = offload_dit(model, "cpu")
    assert model.offloader is offloader and "offloader" not in str(list(model.state_dict()))
    # One flat buffer per block holding every tensor of the block (plus alignment padding).
    for i, block in enumerate(model.blocks):
        tensor_bytes = sum(t.numel() * t.element_size() for t in [*block.parameters(), *block.buffers()])
        assert tensor_bytes <= offloader.host_storage(i).numel() < tensor_bytes + 64 * 64
        assert not offloader.host_pinned(i)  # pinning needs CUDA; the CPU "device" reads plain host memory
    offloader.remove()
    assert offloader.on_device() == ()
    assert torch.equal(golden_forward(model, inputs), expected)  # no hooks: the blocks run from the host buffers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory and the copy stream need CUDA")
def test_cuda_blocks_are_pinned_and_copied_on_a_side_stream(golden_dir: Path) -> None:
    resident, inputs = golden_dit(golden_dir)
    expected = golden_forward(resident, inputs)
    model, _ = golden_dit(golden_dir)
    offloader = offload_dit(model, "cuda", record=True)
    assert all(offloader.host_pinned(i) for i in range(len(model.blocks)))
    devices: list[str] = []
    model.blocks[1].ffn.register_forward_pre_hook(lambda _m, _a: devices.append(model.blocks[1].ffn[0].weight.device.type))
    cuda_inputs = {k: v.cuda() for k, v in inputs.items()}
    out = golden_forward(model, cuda_inputs)
    assert devices == ["cuda"] and model.blocks[1].ffn[0].weight.device.type == "cpu"
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-5)  # GPU float32 kernels, not bitwise
