"""FlashTalk's modified wav2vec 2.0 (spec §5.2): CNN features resampled to the video frame rate.

The release subclasses transformers' ``Wav2Vec2Model`` and changes one thing in ``forward``: the
convolutional features ``[B, N, C_conv]`` (50 Hz) are linearly interpolated along time to ``seq_len``
frames (``F.interpolate(mode="linear", align_corners=True)``) *before* ``feature_projection``. The
pipeline then keeps ``hidden_states[1:]``: the output of every transformer layer, stacked.

``FlashTalkWav2Vec2`` does the same, as a subclass of ``Wav2Vec2Model`` (same module tree, so the
released checkpoints' key names apply unchanged), and returns the stacked layer outputs directly as
one tensor ``[B, seq_len, layers, hidden]``. The encoder loop is written out here (instead of relying
on transformers' output-capturing hooks, which changed between 4.x and 5.x) so the result does not
depend on the installed transformers version:

* post-LN encoder (``do_stable_layer_norm=False``, chinese-wav2vec2-base and wav2vec2-base-960h):
  positional conv embedding added, LayerNorm, then each layer's output is kept;
* pre-LN encoder (``do_stable_layer_norm=True``): as transformers 4.x, which the release ran, returns
  it: the outputs of layers 1..L-1 and the final LayerNorm applied to the output of layer L.

Training-only parts of ``Wav2Vec2Model`` are never used: SpecAugment masking (eval only, no
``mask_time_indices``), attention masks (the release passes none), and the optional adapter (it only
transforms ``last_hidden_state``, which FlashTalk ignores).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Config, Wav2Vec2Model

__all__ = ["FlashTalkWav2Vec2", "resample_features"]


def resample_features(features: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Linear interpolation of ``[B, N, C]`` features to ``[B, seq_len, C]`` (align_corners=True).

    With align_corners the first and last frames map exactly; for the 8 s streaming buffer
    (N = 399, seq_len = 200) output k is exactly CNN frame 2k.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len} (the audio is shorter than one video frame)")
    out = F.interpolate(features.transpose(1, 2), size=seq_len, mode="linear", align_corners=True)
    return out.transpose(1, 2)


class FlashTalkWav2Vec2(Wav2Vec2Model):
    """``Wav2Vec2Model`` whose forward resamples CNN features to ``seq_len`` and returns all layer outputs."""

    def __init__(self, config: Wav2Vec2Config, attn_implementation: str = "sdpa") -> None:
        # Plain scaled-dot-product attention without a mask: fp32-exact on CPU, fused kernels on GPU.
        config._attn_implementation = attn_implementation
        super().__init__(config)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    def forward(self, input_values: torch.Tensor, seq_len: int) -> torch.Tensor:  # type: ignore[override]
        """``input_values [B, T]`` (normalised 16 kHz wave) -> ``[B, seq_len, layers, hidden]``."""
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be [batch, samples], got shape {tuple(input_values.shape)}")
        features = self.feature_extractor(input_values).transpose(1, 2)
        features = resample_features(features, int(seq_len))
        hidden, _ = self.feature_projection(features)
        return self._encode(hidden)

    def _encode(self, hidden: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        hidden = hidden + encoder.pos_conv_embed(hidden)
        stable = bool(self.config.do_stable_layer_norm)
        if not stable:
            hidden = encoder.layer_norm(hidden)
        hidden = encoder.dropout(hidden)
        outputs: list[torch.Tensor] = []
        for layer in encoder.layers:
            result = layer(hidden)
            hidden = result[0] if isinstance(result, tuple) else result  # transformers 4.x returns a tuple
            outputs.append(hidden)
        if stable:
            outputs[-1] = encoder.layer_norm(outputs[-1])
        return torch.stack(outputs, dim=2)
