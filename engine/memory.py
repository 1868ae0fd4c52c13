"""Memory modes of the DiT and their peak GPU memory, derived from the model's shapes.

A mode is two independent choices (``engine.flashtalk.memory`` and ``engine.flashtalk.fp8_weights``; bench flags
``--offload`` and ``--fp8-weights``):

* ``resident`` keeps every DiT weight on the GPU; ``offload`` keeps the 40 blocks in pinned host memory and streams
  them in one block ahead (:mod:`engine.ops.offload`): on the GPU are the 0.32 B non-block parameters and two blocks;
* ``fp8_weights`` stores the block linear layers as e4m3 with per-output-channel float32 scales
  (:mod:`engine.ops.fp8_weights`): 1 byte per weight instead of 2.

:func:`dit_weight_bytes` is exact: it counts every tensor of the DiT from :class:`DiTConfig` (no model is built), and
tests/engine/test_memory_modes.py checks it against the bytes of the tensors a tiny DiT actually holds on its
"device" in each mode, at every block of a forward. Offload's flat buffers pad each tensor to 64 bytes (< 2 KB per
block), which the formula leaves out.

:func:`peak_memory` adds what else is on the GPU, as labelled estimates: the VAE and wav2vec2 weights and the
cross-attention K/V cache (exact counts), the DiT activations (derived from the code: the block-level peak is the
float64 RoPE of the self-attention keys, ~32 bytes per token x width), the VAE decode's working memory (8 live
tensors of its top stage), the T5 encoder while a new prompt is encoded (the conditioning cache frees it; a cached
prompt never loads it) and a CUDA context allowance. ``soulx-live bench`` reports the measured peak on a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from engine.models.audio_attention import AUDIO_CHANNELS
from engine.models.transformer import CLIP_DIM, CLIP_TOKENS, DiTConfig

__all__ = [
    "MEMORY_MODES",
    "Geometry",
    "MemoryMode",
    "PeakEstimate",
    "block_linear_shapes",
    "dit_host_bytes",
    "dit_weight_bytes",
    "format_table",
    "memory_table",
    "peak_memory",
]

GIB = 2**30
FP8_BYTES, SCALE_BYTES = 1, 4  # an e4m3 weight; its output channel's float32 scale
AUDIO_FEATURES = 12 * 768  # wav2vec2 layers x channels the audio projection takes per window position

# Parameter counts of the other released models (SPEC §3-5; checked against meta-built models in the tests).
VAE_PARAMS = 126_892_531  # Wan2.1 VAE, in the DiT dtype
WAV2VEC2_PARAMS = 94_371_712  # chinese-wav2vec2-base, float32 as released
T5_PARAMS = 5_680_910_336  # umT5-XXL encoder, bf16; on the GPU only while a new prompt is encoded
CUDA_CONTEXT_BYTES = GIB  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack (estimate)


@dataclass(frozen=True)
class MemoryMode:
    """Where the DiT's block weights live (``offload``) and in which format (``fp8_weights``)."""

    offload: bool = False
    fp8_weights: bool = False

    @property
    def resident_bf16(self) -> bool:
        return not (self.offload or self.fp8_weights)

    @property
    def label(self) -> str:
        return f"{'offload' if self.offload else 'resident'}, {'FP8' if self.fp8_weights else 'bf16'} weights"


MEMORY_MODES = (MemoryMode(), MemoryMode(fp8_weights=True), MemoryMode(offload=True),
                MemoryMode(offload=True, fp8_weights=True))


@dataclass(frozen=True)
class Geometry:
    """One chunk's pixel size and frame count (the released 768x448, 33 frames by default)."""

    height: int = 768
    width: int = 448
    frames: int = 33

    def tokens(self, cfg: DiTConfig, vae_stride: int = 8) -> int:
        """DiT tokens of one chunk: latent frames x latent rows x latent columns over the patch size."""
        latent = ((self.frames - 1) // 4 + 1, self.height // vae_stride, self.width // vae_stride)
        return math.prod(size // patch for size, patch in zip(latent, cfg.patch_size))


# -- the DiT's tensors, from its config --------------------------------------------------------------------------
def block_linear_shapes(cfg: DiTConfig) -> list[tuple[int, int]]:
    """``(out, in)`` of every linear layer of one block (all have a bias)."""
    d = cfg.dim
    attention = [(d, d)] * 4  # self-attention q k v o
    ffn = [(cfg.ffn_dim, d), (d, cfg.ffn_dim)]
    if cfg.variant == "flashhead":
        return attention + [(d, d)] * 4 + ffn  # the audio cross-attention q k v o
    cross = [(d, d)] * 6  # text/image cross-attention q k v o k_img v_img
    audio = [(d, d), (d, d), (2 * d, cfg.output_dim)]  # q_linear, proj, kv_linear
    return attention + cross + ffn + audio


def _block_other_params(cfg: DiTConfig) -> int:
    """Norm weights and the modulation of one block."""
    d = cfg.dim
    flashhead = cfg.variant == "flashhead"
    qk_norms = (4 if flashhead else 5) * d if cfg.qk_norm else 0  # self norm_q/k, cross norm_q/k(/norm_k_img)
    norm3 = 2 * d if cfg.cross_attn_norm else 0
    norm_x = 2 * d if cfg.norm_input_visual and not flashhead else 0
    return qk_norms + norm3 + norm_x + 6 * d


def _non_block_params(cfg: DiTConfig) -> int:
    """Embeddings, time layers, head, CLIP projection and audio projection."""
    d, patch = cfg.dim, math.prod(cfg.patch_size)
    patch_embedding = d * cfg.in_dim * patch + d
    text = cfg.text_dim * d + d + d * d + d
    time = cfg.freq_dim * d + d + d * d + d + 6 * d * d + 6 * d
    head = d * patch * cfg.out_dim + patch * cfg.out_dim + 2 * d
    # FlashTalk's CLIP projection; FlashHead's unused (but released) MLP over 768-wide audio features instead
    mlp_in = AUDIO_CHANNELS if cfg.variant == "flashhead" else CLIP_DIM
    image = 2 * mlp_in + mlp_in * mlp_in + mlp_in + mlp_in * d + d + 2 * d
    first, later = cfg.audio_window * AUDIO_FEATURES, (cfg.audio_window + cfg.vae_scale - 1) * AUDIO_FEATURES
    hidden, tokens_out = cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim
    audio = (first + later + hidden + 3) * hidden + (hidden + 1) * tokens_out
    audio += 2 * cfg.output_dim if cfg.norm_output_audio else 0
    return patch_embedding + text + time + head + image + audio


def _block_bytes(cfg: DiTConfig, fp8_weights: bool, dtype_bytes: int) -> int:
    linears = block_linear_shapes(cfg)
    weights = sum(out * inp for out, inp in linears)
    outputs = sum(out for out, _ in linears)  # one bias (and with FP8, one scale) per output channel
    weight_bytes = weights * FP8_BYTES + outputs * SCALE_BYTES if fp8_weights else weights * dtype_bytes
    return weight_bytes + (outputs + _block_other_params(cfg)) * dtype_bytes


def dit_weight_bytes(cfg: DiTConfig, mode: MemoryMode, dtype_bytes: int = 2) -> int:
    """Bytes of DiT weights on the GPU at the peak: all blocks resident, or two (running + prefetched) offloaded."""
    blocks_on_device = 2 if mode.offload else cfg.num_layers
    return _non_block_params(cfg) * dtype_bytes + blocks_on_device * _block_bytes(cfg, mode.fp8_weights, dtype_bytes)


def dit_host_bytes(cfg: DiTConfig, mode: MemoryMode, dtype_bytes: int = 2) -> int:
    """Pinned host memory the offloaded blocks take (0 when resident)."""
    return cfg.num_layers * _block_bytes(cfg, mode.fp8_weights, dtype_bytes) if mode.offload else 0


# -- the whole engine on one GPU -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeakEstimate:
    """Peak GPU memory of one mode, by part (bytes). ``peak`` = resident parts + the larger of the two phases."""

    mode: MemoryMode
    dit_weights: int  # exact (derived from the shapes)
    other_weights: int  # VAE + wav2vec2, exact
    cross_kv: int  # the session's cached text/image K/V of every block, exact
    streaming: int  # per chunk: max(DiT activations + FP8 dequantisation, VAE decode), estimate
    preparation: int  # a new prompt: the T5 encoder's weights while it encodes, exact count
    context: int  # CUDA context and allocator slack, estimate
    host_pinned: int  # pinned host memory of offloaded blocks

    @property
    def resident(self) -> int:
        return self.dit_weights + self.other_weights + self.cross_kv + self.context

    @property
    def peak(self) -> int:
        return self.resident + max(self.streaming, self.preparation)

    @property
    def peak_cached_prompt(self) -> int:
        """The peak when the prompt's text embedding is already cached (T5 never loads)."""
        return self.resident + self.streaming


def _cross_kv_bytes(cfg: DiTConfig, dtype_bytes: int) -> int:
    """The session's cached text/image K/V of every block (FlashHead has no text or image input: none)."""
    if cfg.variant == "flashhead":
        return 0
    return cfg.num_layers * 2 * (cfg.text_len + CLIP_TOKENS) * cfg.dim * dtype_bytes


def _activation_bytes(cfg: DiTConfig, tokens: int, dtype_bytes: int) -> int:
    """DiT working memory at its peak inside a block: the block input, the modulated input, q and k in the compute
    dtype (4 x L x d), plus the float64 RoPE of k (pairs, two products, their difference, the stacked result:
    24 bytes x L x d; engine.ops.rope.apply_rope)."""
    return tokens * cfg.dim * (4 * dtype_bytes + 24)


def _vae_decode_bytes(geometry: Geometry, dtype_bytes: int) -> int:
    """VAE decode working memory: ~8 live tensors of its top stage (96 channels x 4 frames x H x W; the causal
    cache adds 2 frames to each conv input), an estimate."""
    return 8 * 96 * 4 * geometry.height * geometry.width * dtype_bytes


def peak_memory(
    mode: MemoryMode, cfg: DiTConfig | None = None, geometry: Geometry | None = None, dtype_bytes: int = 2
) -> PeakEstimate:
    """The peak GPU memory of the single-GPU engine in ``mode`` (released 14B config and 768x448x33 by default)."""
    cfg = cfg or DiTConfig()
    geometry = geometry or Geometry()
    tokens = geometry.tokens(cfg)
    largest = max(out * inp for out, inp in block_linear_shapes(cfg))
    dequantised = 2 * largest * dtype_bytes if mode.fp8_weights else 0  # e4m3 -> dtype, then the scaled copy
    dit_working = _activation_bytes(cfg, tokens, dtype_bytes) + dequantised
    return PeakEstimate(
        mode=mode,
        dit_weights=dit_weight_bytes(cfg, mode, dtype_bytes),
        other_weights=VAE_PARAMS * dtype_bytes + WAV2VEC2_PARAMS * 4,
        cross_kv=_cross_kv_bytes(cfg, dtype_bytes),
        streaming=max(dit_working, _vae_decode_bytes(geometry, dtype_bytes)),
        preparation=T5_PARAMS * 2,
        context=CUDA_CONTEXT_BYTES,
        host_pinned=dit_host_bytes(cfg, mode, dtype_bytes),
    )


def memory_table(cfg: DiTConfig | None = None, geometry: Geometry | None = None) -> list[PeakEstimate]:
    """:func:`peak_memory` of every mode."""
    return [peak_memory(mode, cfg, geometry) for mode in MEMORY_MODES]


def format_table(rows: list[PeakEstimate]) -> str:
    """A Markdown table in GiB: DiT weights, peak with a new prompt, peak with a cached prompt, pinned host memory."""
    lines = ["| mode | DiT weights on GPU | peak (new prompt: T5 loaded) | peak (cached prompt) | pinned host |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.mode.label} | {row.dit_weights / GIB:.1f} GiB | {row.peak / GIB:.1f} GiB | "
                     f"{row.peak_cached_prompt / GIB:.1f} GiB | {row.host_pinned / GIB:.1f} GiB |")
    return "\n".join(lines)
