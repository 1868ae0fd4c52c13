"""One attention entry point for every model, with interchangeable kernels.

``attention(q, k, v)`` takes and returns ``[batch, length, heads, head_dim]`` (the layout of the released
code and of flash-attn), softmax scale ``1/sqrt(head_dim)``, no dropout, non-causal. ``k_len`` optionally
limits each batch item's keys to its first ``k_len[b]`` positions (the release's ``k_lens``).

Backends:

* ``"sdpa"``  -- ``torch.nn.functional.scaled_dot_product_attention``; always available.
* ``"flash"`` -- flash-attn 3 (``flash_attn_interface``) or 2 (``flash_attn``) when importable and usable; the
  import is probed once, and the reason it is unusable is logged. Needs CUDA and fp16/bf16 inputs.
* ``"math"``  -- explicit softmax(q k^T) v computed in float32: the reference path for parity checks.

Choice, first match wins: the ``backend`` argument, then :func:`set_attention_backend`, then automatic
("flash" for fp16/bf16 CUDA tensors when available, else "sdpa"). The float32 parity path therefore uses sdpa
(in float32) on CPU, which the golden tolerances require.

The flash-attn probe (an import) runs once, outside any compiled region: :func:`set_attention_backend` and
:func:`prepare_attention` (which :func:`engine.ops.compile.compile_dit_blocks` calls before compiling) do it, and
its result is kept in plain module globals. The per-call choice then reads only those globals and ``q``'s device
and dtype, which ``torch.compile`` folds into constants under its guards: no graph break at each attention call.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from types import ModuleType
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "BACKENDS",
    "Backend",
    "attention",
    "attention_with_lse",
    "flash_available",
    "get_attention_backend",
    "prepare_attention",
    "resolve_backend",
    "set_attention_backend",
]

log = logging.getLogger(__name__)

Backend = Literal["sdpa", "flash", "math"]
BACKENDS: tuple[str, ...] = ("sdpa", "flash", "math")

_override: str | None = None
#: The flash-attn probe's ``(module, reason)``; None until :func:`_flash_probe` has run (once per process).
_flash_state: tuple[ModuleType | None, str] | None = None


def set_attention_backend(name: str | None) -> None:
    """Force one backend for every later call (``None`` returns to automatic choice)."""
    global _override
    _flash_probe()  # here, outside compiled code, so the automatic choice later only reads the result
    if name is not None:
        _check_name(name)
        if name == "flash" and _flash_module() is None:
            raise RuntimeError(f"attention backend 'flash' is not usable here: {_flash_probe()[1]}")
    _override = name


def get_attention_backend() -> str | None:
    """The forced backend, or ``None`` when the choice is automatic."""
    return _override


def prepare_attention() -> None:
    """Probe the kernels now (the flash-attn import), so that no call inside a compiled region has to: an import
    there would break the graph at every attention call. Idempotent and cheap after the first call."""
    _flash_probe()


def flash_available() -> bool:
    """Whether flash-attn (3 or 2) imports and loads on this machine."""
    return _flash_module() is not None


def resolve_backend(q: torch.Tensor, backend: str | None = None) -> str:
    """The backend a call with ``q`` would use."""
    name = backend or _override
    if name is not None:
        _check_name(name)
        return name
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_available():
        return "flash"
    return "sdpa"


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str | None = None,
    k_len: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Multi-head attention over ``[B, L, H, D]`` tensors; returns ``[B, Lq, H, D]`` in ``q``'s dtype."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects [B, L, heads, head_dim] tensors, got {q.shape}, {k.shape}, {v.shape}")
    name = resolve_backend(q, backend)
    lengths = _key_lengths(k_len, k)
    return _IMPLS[name](q, k, v, lengths).to(q.dtype)


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention plus its log-sum-exp, for merging partial results (ring attention): ``[B, Lq, H, D]`` output in
    ``q``'s dtype and ``[B, H, Lq]`` float32 LSE.

    PyTorch's own flash kernels return the LSE: ``_scaled_dot_product_flash_attention`` on CUDA (fp16/bf16) and
    ``_scaled_dot_product_flash_attention_for_cpu`` on the CPU; ``backend="math"`` (or any other device/dtype)
    takes the explicit float32 path, which materialises the scores.
    """
    name = backend or _override
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if name != "math":
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt)[:2]
            return out.transpose(1, 2), lse
        if q.device.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt)[:2]
            return out.transpose(1, 2), lse
    scores = (qt.float() @ kt.float().transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse.unsqueeze(-1)) @ vt.float()
    return out.transpose(1, 2).to(q.dtype), lse


# -- helpers ---------------------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _key_lengths(k_len: torch.Tensor | int | None, k: torch.Tensor) -> torch.Tensor | None:
    """``k_len`` as an int64 tensor ``[B]`` on k's device, or ``None`` when every key is valid."""
    if k_len is None:
        return None
    lengths = torch.as_tensor(k_len, dtype=torch.long, device=k.device).reshape(-1).expand(k.shape[0])
    return lengths


def _key_mask(lengths: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Boolean ``[B, 1, 1, Lk]`` mask, True where a key takes part."""
    return (torch.arange(num_keys, device=lengths.device) < lengths[:, None])[:, None, None, :]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    mask = None if lengths is None else _key_mask(lengths, k.shape[1])
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    scores = (qf @ kf.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if lengths is not None:
        scores = scores.masked_fill(~_key_mask(lengths, k.shape[1]), float("-inf"))
    return (scores.softmax(dim=-1) @ vf).transpose(1, 2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    module = _flash_module()
    if module is None:
        raise RuntimeError(f"attention backend 'flash' is not usable here: {_flash_probe()[1]}")
    half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q, k, v = (t.to(half) for t in (q, k, v))
    if lengths is None:
        return _first(module.flash_attn_func(q, k, v))
    batch, lq = q.shape[:2]
    q_lens = torch.full((batch,), lq, dtype=torch.int32, device=q.device)
    k_lens = lengths.to(torch.int32)
    packed_k = torch.cat([k[b, : int(n)] for b, n in enumerate(k_lens.tolist())])
    packed_v = torch.cat([v[b, : int(n)] for b, n in enumerate(k_lens.tolist())])
    out = module.flash_attn_varlen_func(
        q.flatten(0, 1), packed_k, packed_v,
        cu_seqlens_q=F.pad(q_lens.cumsum(0, dtype=torch.int32), (1, 0)),
        cu_seqlens_k=F.pad(k_lens.cumsum(0, dtype=torch.int32), (1, 0)),
        max_seqlen_q=lq, max_seqlen_k=int(k_lens.max()),
    )
    return _first(out).unflatten(0, (batch, lq))


def _first(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """flash-attn 3 returns ``(out, lse)`` in some versions, flash-attn 2 the tensor."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _flash_probe() -> tuple[ModuleType | None, str]:
    """``(module, reason)`` of flash-attn; module is None when unusable. Imports once per process.

    A plain global rather than ``functools.cache``: Dynamo ignores a cache wrapper and would trace the import
    again inside a compiled region (a graph break); a global set before compiling is a guarded constant.
    """
    global _flash_state
    if _flash_state is None:
        _flash_state = _import_flash()
    return _flash_state


def _import_flash() -> tuple[ModuleType | None, str]:
    reasons = []
    for name in ("flash_attn_interface", "flash_attn"):
        try:
            module = __import__(name)
        except (ImportError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: ABI or CUDA mismatch
            reasons.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not torch.cuda.is_available():
            reasons.append(f"{name} imports but CUDA is not available")
            break
        log.info("attention: flash backend uses %s", name)
        return module, f"using {name}"
    reason = "; ".join(reasons) + " (install the 'gpu' extra: pip install flash-attn)"
    log.info("attention: flash backend unavailable (%s)", reason)
    return None, reason


def _flash_module() -> ModuleType | None:
    return _flash_probe()[0]


_IMPLS: dict[str, Callable[..., torch.Tensor]] = {"sdpa": _sdpa, "flash": _flash, "math": _math}
