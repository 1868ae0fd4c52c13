"""The FlashTalk streaming engine: one chunk at a time, audio in, frames out (spec §1.2, §5.4, §6).

Per chunk (the release's ``generate(audio_embedding)``; :func:`generate_chunk`)::

    latent  = noise (latent dtype);  latent[:, :, :M] = motion latent
    latent  = 4-step sampler with the DiT                      (engine.sampler.denoise)
    video   = VAE.decode(latent)                               -> frame_num frames in [-1, 1]
    video   = colour-correct(video, reference)                 (engine.postprocess)
    motion' = VAE.encode(video[:, :, -motion_frames:])          -> the next chunk's context
    emit      video[:, :, motion_frames:]                       (frame_num - motion_frames frames)

:func:`stream_step` runs that on an explicit :class:`~engine.state.SessionState` and returns the next
state, so the loop has no hidden state. :class:`FlashTalkEngine` / :class:`FlashTalkSession` implement
``engine.interface``: pushed 16 kHz PCM is consumed in chunks of ``frames_per_chunk * 640`` samples; each
chunk's samples go into the 8 s zero-initialised window (as released: the window receives exactly the
chunk's new audio before it is embedded, never audio from later chunks), wav2vec2 embeds the window, and
the emitted frames play with exactly those samples.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from engine.config import (
    DEFAULT_PROMPT,
    DtypePolicy,
    FlashTalkConfig,
    FlashTalkConfigError,
    resolve_device,
    resolve_dtypes,
)
from engine.drift import (
    DriftMonitor,
    DriftReport,
    DriftThresholds,
    RegenDeadline,
    SessionStats,
)
from engine.interface import ChunkSpec, FrameChunk, SessionRequest, mono_pcm
from engine.loading.layout import VAE_CHECKPOINT, find_wav2vec
from engine.parallel.decide import rank0_decides
from engine.pcm_queue import PcmQueue
from engine.postprocess import match_and_blend_colors, to_uint8_frames
from engine.prepare import VideoVAE, fit_reference, prepare_reference, reference_pixels
from engine.sampler import (
    NoiseSource,
    SeededNoise,
    StepCallback,
    denoise,
    shifted_timesteps,
)
from engine.state import SessionState, StreamConditioning

if TYPE_CHECKING:  # the audio front end imports transformers: only sessions need it, not the loop
    from engine.audio_encoder import StreamingAudioWindow

__all__ = [
    "AudioEmbedder",
    "ChunkOutput",
    "ConditioningProvider",
    "FlashTalkEngine",
    "FlashTalkModels",
    "FlashTalkSession",
    "LoadedModels",
    "SessionSnapshot",
    "generate_chunk",
    "load_models",
    "stream_step",
]

log = logging.getLogger(__name__)


# -- components --------------------------------------------------------------------------------------------
class AudioEmbedder(Protocol):
    """``engine.audio_encoder.AudioEncoder``: embeds the streaming window for a ``frame_num``-frame chunk."""

    def embed_window(self, window: StreamingAudioWindow, frame_num: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class ConditioningProvider(Protocol):
    """``engine.conditioning.Conditioner``: T5 context ``[L, 4096]``, CLIP tokens ``[1, 257, 1280]`` and the
    reference's VAE latents, each computed once per prompt / avatar and cached."""

    def text_context(self, prompt: str) -> torch.Tensor: ...

    def image_tokens(self, image_u8: np.ndarray) -> torch.Tensor: ...

    def reference_latents(
        self, image_u8: np.ndarray, params: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]: ...


DiT = Callable[..., torch.Tensor]  # model(x, t, context, clip_fea, y, audio, seq_len=...) -> [B,16,F,H,W] fp32


@dataclass(frozen=True)
class FlashTalkModels:
    """The per-chunk models: the DiT and the VAE."""

    dit: DiT
    vae: VideoVAE


@dataclass(frozen=True)
class ChunkOutput:
    """Everything one chunk computes (batched, batch 1)."""

    latent: torch.Tensor  # [1,16,F_lat,h,w] sampler output (fp32)
    video_decoded: torch.Tensor  # [1,3,frame_num,H,W] before colour correction
    video: torch.Tensor  # [1,3,frame_num,H,W] colour-corrected
    motion_latent_next: torch.Tensor  # [1,16,M',h,w]


# -- the loop ----------------------------------------------------------------------------------------------
def generate_chunk(
    models: FlashTalkModels,
    cond: StreamConditioning,
    motion_latent: torch.Tensor,
    audio_emb: torch.Tensor,
    noise: NoiseSource,
    cfg: FlashTalkConfig,
    *,
    on_step: StepCallback | None = None,
) -> ChunkOutput:
    """The release's ``generate()``: sampler -> decode -> colour correction -> re-encode the tail.

    ``audio_emb [1, frame_num, 5, 12, 768]``; the initial noise is drawn in ``y``'s dtype (the release's
    ``param_dtype``), step noise in the update's dtype (fp32).
    """
    device = cond.device
    audio = audio_emb.to(device)

    cached = {} if cond.cross is None else {"cross": cond.cross}  # per-session text/image K/V

    def dit_fn(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return models.dit(latent, t, cond.context, cond.clip_fea, cond.y, audio, seq_len=cond.seq_len, **cached)

    timesteps = shifted_timesteps(cfg.sampling_steps, cfg.shift, cfg.num_timesteps).to(device)
    latent_init = noise.initial(cond.latent_shape, cond.y.dtype, device)
    latent = denoise(
        dit_fn, latent_init, motion_latent, timesteps, noise, num_timesteps=cfg.num_timesteps, on_step=on_step
    )
    decoded = models.vae.decode(latent)
    video = decoded
    if cfg.color_correction_strength > 0.0:
        video = match_and_blend_colors(decoded, cond.cond_image, cfg.color_correction_strength)
    motion_next = models.vae.encode(video[:, :, -cfg.motion_frames :])
    return ChunkOutput(latent=latent, video_decoded=decoded, video=video, motion_latent_next=motion_next)


def stream_step(
    models: FlashTalkModels, state: SessionState, audio_emb: torch.Tensor, cfg: FlashTalkConfig
) -> tuple[SessionState, torch.Tensor]:
    """One chunk from ``state``: ``(next state, emitted video [1,3,frame_num-motion_frames,H,W] in [-1,1])``.

    Noise continues from ``state.rng_state``; ``state`` itself is left unchanged (keep it to replay).
    """
    generator = state.generator()
    out = generate_chunk(models, state.conditioning, state.motion_latent, audio_emb, SeededNoise(generator), cfg)
    emitted = out.video[:, :, cfg.motion_frames :]
    return state.advanced(out.motion_latent_next, generator, emitted.shape[2]), emitted


# -- engine and session ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionSnapshot:
    """What :meth:`FlashTalkSession.restore` needs to continue a session exactly from a point."""

    state: SessionState
    window: np.ndarray  # the audio window in time order (float64)
    window_pushed: int
    pending: np.ndarray  # queued samples not yet consumed
    seq: int


class FlashTalkSession:
    """One avatar speaking along one audio timeline (``engine.interface.AvatarSession``).

    ``next_chunk`` consumes ``spec.samples_per_chunk`` queued samples (zero-padded when fewer), runs one
    :func:`stream_step` and returns its frames as uint8 with exactly that audio. Frame ``k`` of the session
    plays at sample ``k * samples_per_frame``.

    Retrospective self-correction (when the engine has an enabled ``drift`` config): every generated chunk
    is measured by a :class:`~engine.drift.DriftMonitor` before it is returned. A drifted chunk re-anchors
    the motion context (``SessionState.re_anchor(reanchor_blend)``) and, with ``regenerate`` and when
    ``deadline`` allows, is generated again from the re-anchored context with the same audio and noise; the
    attempt with the smaller ``badness`` is emitted. ``stats`` counts chunks, corrections and regenerations
    and keeps the last report; each correction is logged at WARNING. In a multi-GPU group rank 0 makes each of
    these choices for every rank (:func:`engine.parallel.decide.rank0_decides`).
    """

    def __init__(
        self,
        engine: FlashTalkEngine,
        session_id: str,
        state: SessionState,
        *,
        deadline: RegenDeadline | None = None,
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.spec = engine.spec
        from engine.audio_encoder import StreamingAudioWindow

        cfg = engine.cfg
        self._state = state
        self._seq = 0
        self._window = StreamingAudioWindow(cfg.sample_rate, cfg.fps, cfg.audio_buffer_s)
        self._pending = PcmQueue(4 * cfg.samples_per_chunk)
        self.stats = SessionStats()
        drift = engine.drift
        self.deadline = deadline or (RegenDeadline.from_settings(drift) if drift is not None else RegenDeadline())
        self.monitor: DriftMonitor | None = engine.drift_monitor(state) if drift is not None and drift.enabled else None

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def buffered_samples(self) -> int:
        return len(self._pending)

    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue mono float samples in [-1, 1] at ``spec.sample_rate`` (shape ``(n,)``)."""
        self._pending.push(mono_pcm(pcm))

    def chunks_ready(self) -> int:
        return len(self._pending) // self.spec.samples_per_chunk

    def next_chunk(self) -> FrameChunk:
        audio = self._pending.pop(self.spec.samples_per_chunk)
        self._window.push(audio)
        start = time.perf_counter()
        engine = self.engine
        with torch.inference_mode():
            audio_emb, _ = engine.audio_encoder.embed_window(self._window, engine.cfg.frame_num)
            state, video = stream_step(engine.models, self._state, audio_emb, engine.cfg)
            if self.monitor is not None:
                state, video = self._review(self._state, state, video, audio_emb, start)
            frames = to_uint8_frames(video).cpu().numpy()
        self._state = state
        self.stats.chunks += 1
        self.stats.last_compute_s = time.perf_counter() - start
        first = self._state.frame_index - frames.shape[0]
        chunk = FrameChunk(
            session_id=self.session_id,
            seq=self._seq,
            first_frame=first,
            frames=frames,
            audio=audio,
            audio_t0=first * self.spec.samples_per_frame,
        )
        self._seq += 1
        return chunk

    def _review(
        self,
        before: SessionState,
        after: SessionState,
        video: torch.Tensor,
        audio_emb: torch.Tensor,
        start: float,
    ) -> tuple[SessionState, torch.Tensor]:
        """Check a generated chunk; when drifted, re-anchor and maybe regenerate (see the class docstring)."""
        drift = self.engine.drift
        if self.monitor is None or drift is None:
            return after, video
        report = self.monitor.check(video, after.motion_latent, before.motion_latent)
        elapsed = time.perf_counter() - start
        chunk_s = self.spec.frames_per_chunk / float(self.spec.fps)
        # In a multi-GPU group every rank must take the same branch: regenerating runs the DiT (and the parallel
        # VAE) again, full of collectives the other ranks would never join. The deadline reads this rank's wall
        # clock and the verdict rests on float metrics, so rank 0 decides and the group follows (one tiny
        # broadcast per chunk; nothing in a single process). Deciding "deterministically" from shared data
        # would still need rank 0's clock, i.e. the same broadcast.
        drifted, regenerate = rank0_decides(
            (report.drifted, report.drifted and bool(drift.regenerate) and self.deadline.allows(elapsed, chunk_s))
        )
        if not drifted:
            self.stats.drift = report
            return after, video
        blend = float(drift.reanchor_blend)
        emitted, final_state, final_video, final_report = "original", after.re_anchor(blend), video, report
        retry: DriftReport | None = None
        if regenerate:
            anchored = before.re_anchor(blend)
            state2, video2 = stream_step(self.engine.models, anchored, audio_emb, self.engine.cfg)
            retry = self.monitor.check(video2, state2.motion_latent, anchored.motion_latent)
            self.stats.regenerated += 1
            # which attempt goes on, and whether it is re-anchored, sets the next chunk's context: rank 0's call
            better, retry_drifted = rank0_decides((retry.badness <= report.badness, retry.drifted))
            if better:
                emitted, final_video, final_report = "regenerated", video2, retry
                final_state = state2.re_anchor(blend) if retry_drifted else state2
        elif drift.regenerate:
            self.stats.regenerate_skipped += 1
        self.stats.corrections += 1
        self.stats.drift = final_report
        entry: dict[str, object] = {
            "chunk": before.chunk_index,
            "first_frame": before.frame_index,
            "reasons": report.reasons,
            "metrics": report.as_dict(),
            "reanchor_blend": blend,
            "regenerated": retry is not None,
            "retry_metrics": retry.as_dict() if retry is not None else None,
            "emitted": emitted,
            "elapsed_s": elapsed,
        }
        self.stats.record(entry)
        log.warning(
            "drift correction #%d in session %s at frame %d: %s [%s]; re-anchored (blend %.2f); %s%s",
            self.stats.corrections,
            self.session_id,
            before.frame_index,
            "; ".join(report.reasons),
            report.describe(),
            blend,
            "regenerated" if retry is not None else (
                "no regeneration (disabled)" if not drift.regenerate
                else f"no regeneration (deadline: {elapsed:.3f} s of {chunk_s:.3f} s spent)"
            ),
            f", emitted the {emitted} chunk [{retry.describe()}]" if retry is not None else "",
        )
        return final_state, final_video

    def reset(self) -> None:
        """Drop queued audio, silence the window, back to the reference pose and seed; frames continue."""
        self._pending.clear()
        self._window.reset()
        self._state = self._state.reset()

    def re_anchor(self) -> None:
        """Motion context back to the reference latent only (audio and noise continue)."""
        self._state = self._state.re_anchor()

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(
            state=self._state.snapshot(),
            window=self._window.window(),
            window_pushed=self._window.samples_pushed,
            pending=self._pending.copy(),
            seq=self._seq,
        )

    def restore(self, snapshot: SessionSnapshot) -> None:
        self._state = snapshot.state.snapshot()
        self._window.reset()
        self._window.push(snapshot.window)
        self._window.samples_pushed = snapshot.window_pushed
        self._pending.clear()
        self._pending.push(snapshot.pending)
        self._seq = snapshot.seq


@dataclass
class FlashTalkEngine:
    """The loaded FlashTalk models (``engine.interface.AvatarEngine``). Build with :meth:`from_components`
    (tests, custom loading) or :meth:`from_folder` (the released weights layout)."""

    models: FlashTalkModels
    audio_encoder: AudioEmbedder
    conditioning: ConditioningProvider
    cfg: FlashTalkConfig
    device: torch.device
    dtype: torch.dtype  # the release's param_dtype: reference pixels, y, context, CLIP tokens, initial noise
    name: str = "flashtalk"
    drift: DriftThresholds | None = None  # engine.drift settings; None: no drift monitor, no self-correction
    spec: ChunkSpec = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.spec = ChunkSpec(
            fps=Fraction(cfg.fps),
            sample_rate=cfg.sample_rate,
            frames_per_chunk=cfg.frames_per_chunk,
            height=cfg.height,
            width=cfg.width,
        )

    @classmethod
    def from_components(
        cls,
        dit: torch.nn.Module,
        vae: VideoVAE,
        audio_encoder: AudioEmbedder,
        conditioning: ConditioningProvider,
        cfg: FlashTalkConfig | None = None,
        *,
        drift: DriftThresholds | None = None,
    ) -> FlashTalkEngine:
        """Wrap loaded models; device and compute dtype are the DiT's."""
        param = next(dit.parameters())
        return cls(
            models=FlashTalkModels(dit=dit, vae=vae),
            audio_encoder=audio_encoder,
            conditioning=conditioning,
            cfg=cfg or FlashTalkConfig(),
            device=param.device,
            dtype=param.dtype,
            drift=drift,
        )

    @classmethod
    def from_folder(
        cls,
        weights_dir: Path | str,
        cfg: FlashTalkConfig | None = None,
        *,
        wav2vec_dir: Path | str | None = None,
        cache_dir: Path | None = None,
        drift: DriftThresholds | None = None,
        dit_blocks_on_host: bool = False,
    ) -> FlashTalkEngine:
        """Load the released ``SoulX-FlashTalk-14B`` folder (spec §2.9) on ``cfg.device`` in ``cfg.dtype``.

        wav2vec2 comes from ``wav2vec_dir``, else ``chinese-wav2vec2-base`` inside or beside the folder.
        ``dit_blocks_on_host``: the DiT's 40 blocks stay in host memory (the rest of it goes to the device), for the
        memory modes and FP8 to convert and place one block at a time (:func:`engine.placement.place_dit`), so the
        bf16 DiT (37.8 GB) never has to fit on the GPU.
        """
        from engine.conditioning import Conditioner

        cfg = cfg or FlashTalkConfig()
        weights = Path(weights_dir)
        try:
            w2v = Path(wav2vec_dir) if wav2vec_dir else find_wav2vec(weights)
        except FileNotFoundError as exc:
            raise FlashTalkConfigError(str(exc)) from exc
        loaded = load_models(weights, weights / VAE_CHECKPOINT, w2v, cfg, dit_blocks_on_host=dit_blocks_on_host)
        conditioning = Conditioner(weights, cache_dir=cache_dir, device=loaded.device, out_dtype=loaded.dtypes.conditioning)
        return cls(models=loaded.models, audio_encoder=loaded.audio_encoder, conditioning=conditioning, cfg=cfg,
                   device=loaded.device, dtype=loaded.dtypes.dit, drift=drift)

    # -- sessions --------------------------------------------------------------------------------------
    def conditioning_for(self, image_u8: np.ndarray, prompt: str) -> StreamConditioning:
        """The session-fixed tensors for a reference image (any size; fitted here) and a prompt."""
        cfg = self.cfg
        image = fit_reference(image_u8, (cfg.height, cfg.width))
        with torch.inference_mode():
            cond_image = reference_pixels(image, dtype=self.dtype, device=self.device)
            # y costs a VAE encode of frame_num frames: cached on disk per avatar like the CLIP tokens.
            latents = self.conditioning.reference_latents(
                image, self.reference_params(), lambda: self.encode_reference(cond_image)
            )
        context, clip_fea, cross = self.prompt_context(image, prompt)
        return StreamConditioning(
            cond_image=cond_image,
            y=latents["y"].to(device=self.device),
            context=context,
            clip_fea=clip_fea,
            reference_latent=latents["motion_latent"].to(device=self.device),
            seq_len=cfg.seq_len(),
            cross=cross,
        )

    def reference_params(self) -> str:
        """What shapes the cached reference latents besides the image and the VAE (part of the cache key)."""
        return f"frames={self.cfg.frame_num};stride={self.cfg.vae_stride[0]};dtype={self.dtype}"

    def encode_reference(self, cond_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``y`` (mask + VAE latent of the reference and black frames) and the first motion latent."""
        cfg = self.cfg
        prepared = prepare_reference(cond_image, self.models.vae, cfg.frame_num, temporal_stride=cfg.vae_stride[0])
        return {"y": prepared.y, "motion_latent": prepared.motion_latent}

    def prompt_context(self, image: np.ndarray, prompt: str) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """T5 context ``[1, L, 4096]``, CLIP tokens ``[1, 257, 1280]`` and the DiT's cached cross K/V of them."""
        with torch.inference_mode():
            context = self.conditioning.text_context(prompt or DEFAULT_PROMPT).to(device=self.device, dtype=self.dtype)
            clip_fea = self.conditioning.image_tokens(image).to(device=self.device, dtype=self.dtype)
        if context.dim() == 3 and context.shape[0] == 1:
            context = context[0]
        if context.dim() != 2 or tuple(clip_fea.shape[-2:]) != (257, 1280):
            raise ValueError(
                f"conditioning must give context [L, 4096] and CLIP tokens [1, 257, 1280], got "
                f"{list(context.shape)} and {list(clip_fea.shape)}"
            )
        context, clip_fea = context[None], clip_fea.reshape(1, 257, 1280)
        context_kv = getattr(self.models.dit, "context_kv", None)
        cross = None
        if context_kv is not None:
            with torch.no_grad():
                cross = context_kv(context, clip_fea)  # constant for the session: not recomputed per step
        return context, clip_fea, cross

    def start_session(self, request: SessionRequest) -> FlashTalkSession:
        """A session for ``request.avatar`` (the built-in avatar when None); a negative seed means 9999.

        ``request.extra["realtime"]`` (bool), when given, overrides the drift config's regeneration deadline
        (True: regenerate only within the chunk's duration; False: always, e.g. offline rendering).
        """
        avatar = request.avatar if request.avatar is not None else _default_avatar(self.cfg)
        seed = int(request.seed) if int(request.seed) >= 0 else self.cfg.seed
        state = SessionState.initial(self.conditioning_for(avatar, request.prompt), seed)
        log.info("flashtalk session %s: seed %d, %d tokens per chunk", request.session_id, seed, state.conditioning.seq_len)
        deadline = None
        if "realtime" in request.extra:
            base = RegenDeadline.from_settings(self.drift) if self.drift is not None else RegenDeadline()
            deadline = RegenDeadline(realtime=bool(request.extra["realtime"]), budget=base.budget)
        return FlashTalkSession(self, request.session_id, state, deadline=deadline)

    def drift_monitor(self, state: SessionState) -> DriftMonitor:
        """A monitor for a session: the reference picture is the VAE decode of the reference latent (what a
        perfect chunk shows through this VAE), the motion reference the reference latent itself."""
        reference_latent = state.conditioning.reference_latent
        with torch.inference_mode():
            reference_rgb = self.models.vae.decode(reference_latent)
        return DriftMonitor(reference_rgb, reference_latent, self.drift)

    def render(self, state: SessionState, window: StreamingAudioWindow) -> tuple[np.ndarray, SessionState]:
        """Embed ``window`` and run one :func:`stream_step`: host uint8 frames ``(n, H, W, 3)`` and the next state."""
        with torch.inference_mode():
            audio_emb, _ = self.audio_encoder.embed_window(window, self.cfg.frame_num)
            state, video = stream_step(self.models, state, audio_emb, self.cfg)
            frames = to_uint8_frames(video).cpu().numpy()
        return frames, state


@dataclass(frozen=True)
class LoadedModels:
    """What :func:`load_models` gives: the per-chunk models, the audio front end, the device and dtypes."""

    models: FlashTalkModels
    audio_encoder: AudioEmbedder
    device: torch.device
    dtypes: DtypePolicy


def load_models(
    dit_dir: Path, vae_file: Path, wav2vec_dir: Path, cfg: FlashTalkConfig, *,
    dit_blocks_on_host: bool = False, loudness_norm: bool = True,
) -> LoadedModels:
    """Load a released DiT folder, VAE file and wav2vec2 folder on ``cfg.device`` in ``cfg.dtype`` (strict, on
    meta). ``dit_blocks_on_host``: the DiT's blocks stay on the host for a memory mode to place them."""
    from engine.audio_encoder import AudioEncoder
    from engine.loading.dit import load_dit
    from engine.loading.vae import load_vae

    device, why = resolve_device(cfg.device)
    log.info("engine device %s (%s)%s", device, why, "; DiT blocks on the host" if dit_blocks_on_host else "")
    dtypes = resolve_dtypes(device, cfg.dtype)
    audio_encoder = AudioEncoder.from_folder(wav2vec_dir, dtype=dtypes.audio, device=device,
                                             sample_rate=cfg.sample_rate, fps=cfg.fps, loudness_norm=loudness_norm)
    vae = load_vae(vae_file, dtype=dtypes.vae, device=device)
    dit = load_dit(dit_dir, dtype=dtypes.dit, device="cpu" if dit_blocks_on_host else device)
    if dit_blocks_on_host:
        for name, child in dit.named_children():
            if name != "blocks":  # the engine takes its device and dtype from the DiT's first parameter
                child.to(device)
    return LoadedModels(FlashTalkModels(dit=dit, vae=vae), audio_encoder, device, dtypes)


def _default_avatar(cfg: FlashTalkConfig) -> np.ndarray:
    from engine.lite.default_avatar import draw_default_avatar

    return draw_default_avatar(max(cfg.height, cfg.width, 64))
