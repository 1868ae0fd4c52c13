"""Patches applied to torch and to the imported release for the reference run only, each undone afterwards.

* CPU only: ``torch.cuda.current_device`` (read as a default argument when ``t5.py`` is imported) and
  ``torch.cuda.synchronize`` (called around every stage of ``generate``) become harmless, and the release's
  ``flash_attention`` (which asserts CUDA and casts to bf16) is replaced by float32 SDPA with the same key masks.
* Always: the release's module-level ``torch.compile`` switches are set from ``--reference-compile``, and its
  wav2vec2 hidden states are collected with forward hooks when transformers returns none (transformers 5).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch

__all__ = ["cuda_shims", "patch_release", "swapped_attributes", "with_hidden_states"]


@contextlib.contextmanager
def cuda_shims(device: str) -> Iterator[dict[str, str]]:
    """On a CPU run, make the release's bare CUDA calls no-ops; yields what was replaced."""
    if str(device).startswith("cuda") or torch.cuda.is_available():
        yield {}
        return
    saved = (torch.cuda.current_device, torch.cuda.synchronize)
    torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    torch.cuda.synchronize = lambda device=None: None  # type: ignore[assignment]
    try:
        yield {"torch.cuda": "CPU run: torch.cuda.current_device -> 0 and torch.cuda.synchronize -> no-op"}
    finally:
        torch.cuda.current_device, torch.cuda.synchronize = saved  # type: ignore[assignment]


def _hidden_states_hooked(encoder: Any, run: Any) -> tuple[Any, list[torch.Tensor]]:
    """Run ``run()`` while hooks on ``encoder.layers`` record each layer's output hidden states."""
    collected: list[torch.Tensor] = []

    def record(module: Any, args: Any, output: Any) -> None:
        collected.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(record) for layer in encoder.layers]
    try:
        return run(), collected
    finally:
        for handle in handles:
            handle.remove()


def with_hidden_states(forward: Any) -> Any:
    """Wrap the release's ``Wav2Vec2Model.forward`` so ``output_hidden_states=True`` yields hidden states.

    The release reads ``hidden_states[1:]`` (one per transformer layer). Under transformers 5 the encoder it calls
    returns ``None`` there; the hooks give the same tensors (each layer's output), with the encoder's input
    (index 0, never read by the release) in front. Under transformers 4 the encoder's own tuple is kept. For the
    post-LN encoder of the released wav2vec2 (``do_stable_layer_norm`` false) each layer's output is exactly what
    transformers 4 put in the tuple; tests/engine/test_release_dry_run.py checks it against the golden hidden states.
    """

    @functools.wraps(forward)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("output_hidden_states"):
            return forward(self, *args, **kwargs)
        out, layers = _hidden_states_hooked(self.encoder, lambda: forward(self, *args, **kwargs))
        if getattr(out, "hidden_states", None) is None and layers:
            # The encoder's input is not recorded; index 0 is never read, so the last state stands in for it.
            out.hidden_states = (layers[-1], *layers)
        return out

    wrapped.__release_compat__ = True  # type: ignore[attr-defined]
    return wrapped


@contextlib.contextmanager
def swapped_attributes(swaps: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set each ``(object, name, value)`` for the duration of the block and put every old value back after it."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in swaps]
    try:
        for obj, name, value in swaps:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


@contextlib.contextmanager
def patch_release(release: SimpleNamespace, device: str, compile_release: bool) -> Iterator[dict[str, str]]:
    """Apply the patches to the imported release modules; yields {what: one line}; restores on exit."""
    from engine.bench.release_compat.attention import release_flash_attention_sdpa

    patches: list[tuple[Any, str, Any, str]] = [
        (release.pipeline, "COMPILE_MODEL", compile_release, ""),
        (release.pipeline, "COMPILE_VAE", compile_release, ""),
    ]
    w2v = release.wav2vec2.Wav2Vec2Model
    if not getattr(w2v.forward, "__release_compat__", False):
        patches.append((w2v, "forward", with_hidden_states(w2v.forward),
                        ("wav2vec2 hidden states collected with forward hooks on the encoder layers when "
                         "transformers returns none (transformers 5)")))
    on_cpu = not str(device).startswith("cuda")
    if on_cpu:
        patches.append((release.model, "flash_attention", release_flash_attention_sdpa,
                        "CPU run: the DiT's flash_attention (CUDA + bf16 asserted) -> float32 SDPA, same key masks"))
        patches.append((release.inference, "get_device", lambda ulysses, ring: str(device),
                        f"CPU run: get_device -> {device!r} (the release hard-codes 'cuda' at world size 1)"))
    # Only what this checkout has (a trimmed or older release may lack a patched name).
    patches = [patch for patch in patches if hasattr(patch[0], patch[1])]
    lines = {f"{obj.__name__.rsplit('.', 1)[-1]}.{name}": line for obj, name, _, line in patches if line}
    if not compile_release:
        lines["torch.compile"] = ("the release's COMPILE_MODEL/COMPILE_VAE off (--reference-compile turns them on "
                                  "as shipped)")
    with swapped_attributes([(obj, name, value) for obj, name, value, _ in patches]):
        yield lines
