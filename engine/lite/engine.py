"""The lite engine: CPU, no weights, real time. Implements ``engine.interface`` for any frontal portrait.

Per chunk the session turns its audio into a mouth opening and shape per frame
(``audio_features``), asks the animator for blink, idle head motion and breathing at each frame
index, and renders the frames (``renderer``).

Latency: a chunk's frames read ``MouthFeatureConfig.lookahead_samples`` (60 ms at 16 kHz / 25 fps)
of the audio after the chunk, so lips move slightly before the sound, as people's do.
``chunks_ready`` therefore counts a chunk once its audio plus that look-ahead is buffered; audio in,
frames out, the engine adds one chunk (200 ms) plus 60 ms. A caller that asks earlier still gets a
chunk: a whole chunk whose look-ahead has not arrived mirrors its own last 60 ms instead (so the
frames depend slightly on how far ahead audio was pushed; pushing one chunk ahead gives the exact
result). At the end of a stream call ``next_chunk`` while ``buffered_samples`` > 0: the missing
audio is silence, so the mouth closes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engine.interface import ChunkSpec, FrameChunk, SessionRequest, mono_pcm
from engine.lite.animator import blink_amount, idle_pose, speaking_pose
from engine.lite.audio_features import MouthFeatureConfig, MouthFeatureState, mouth_features
from engine.lite.default_avatar import default_avatar_layout, draw_default_avatar
from engine.lite.face_locator import locate_face
from engine.lite.renderer import LiteRenderer, fit_portrait
from engine.lite.visemes import VisemeTrack
from engine.lite.visemes import apply as apply_viseme

log = logging.getLogger(__name__)

_EMPHASIS_RATE = 0.12  # per-frame low-pass of the opening that drives the speaking nod


@dataclass(frozen=True)
class LiteConfig:
    """Output geometry and timing of the lite engine, plus switches for the idle animation."""

    width: int = 512
    height: int = 512
    fps: int = 25
    sample_rate: int = 16000
    frames_per_chunk: int = 5
    blinks: bool = True
    idle_motion: bool = True

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ValueError(f"lite output must be even and at least 64x64 pixels, got {self.width}x{self.height}")
        if self.fps <= 0 or self.frames_per_chunk <= 0:
            raise ValueError(f"fps and frames_per_chunk must be positive, got {self.fps} and {self.frames_per_chunk}")
        if self.sample_rate % self.fps or (self.sample_rate // self.fps) % 2:
            raise ValueError(f"sample_rate {self.sample_rate} must hold an even whole number of samples per frame at {self.fps} fps")

    def spec(self) -> ChunkSpec:
        return ChunkSpec(
            fps=Fraction(self.fps), sample_rate=self.sample_rate, frames_per_chunk=self.frames_per_chunk, height=self.height, width=self.width
        )

    def features(self) -> MouthFeatureConfig:
        return MouthFeatureConfig(sample_rate=self.sample_rate, samples_per_frame=self.sample_rate // self.fps)


class LiteSession:
    """One avatar speaking along one audio timeline (see the module docstring for timing)."""

    def __init__(self, session_id: str, renderer: LiteRenderer, config: LiteConfig, seed: int) -> None:
        self.session_id = session_id  # chunks carry alpha when the renderer has a matte (LiteEngine.start_session)
        self.renderer = renderer
        self.config = config
        self.spec = config.spec()
        self.seed = seed
        self._features = config.features()
        self._frame = 0
        self._seq = 0
        self._reset_audio()

    def _reset_audio(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._history = np.zeros(self._features.pre_samples, dtype=np.float32)
        self._state = MouthFeatureState.initial(self._features)
        self._emphasis = 0.0
        self._visemes = VisemeTrack()

    @property
    def frame_index(self) -> int:
        """Index of the next frame this session will emit."""
        return self._frame

    @property
    def buffered_samples(self) -> int:
        """Audio pushed but not yet consumed by a chunk."""
        return int(self._pending.shape[0])

    def push_audio(self, pcm: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, mono_pcm(pcm)])

    def push_phonemes(self, spans: list[tuple[int, int, str]]) -> None:
        """Phoneme timings ``(start_sample, end_sample, ipa)`` on this session's timeline (from the TTS): the lips
        take each phoneme's shape (closed on m/b/p, round on o/u...) while the audio sets how far they open."""
        self._visemes.add(spans)

    def chunks_ready(self) -> int:
        usable = self._pending.shape[0] - self._features.lookahead_samples
        return max(0, usable // self.spec.samples_per_chunk)

    def next_chunk(self) -> FrameChunk:
        n, spf = self.spec.frames_per_chunk, self.spec.samples_per_frame
        own, need = n * spf, n * spf + self._features.lookahead_samples
        ahead = self._lookahead_window(own, need)
        window = np.concatenate([self._history, ahead])
        opening, shape, self._state = mouth_features(window, n, self._state, self._features)
        audio = np.ascontiguousarray(ahead[: n * spf])
        self._history = audio[-self._features.pre_samples :].copy()
        self._pending = self._pending[n * spf :]
        frames = np.empty((n, self.spec.height, self.spec.width, 3), dtype=np.uint8)
        alpha = None if self.renderer.matte is None else np.empty((n, self.spec.height, self.spec.width), dtype=np.uint8)
        for i in range(n):
            frame = self._frame + i
            viseme = self._visemes.at(frame * spf + spf // 2) if len(self._visemes) else None
            frame_open, frame_shape = apply_viseme(viseme, float(opening[i]), float(shape[i]))
            self._render(frame, frame_open, frame_shape, out=frames[i], alpha_out=None if alpha is None else alpha[i])
        self._visemes.prune((self._frame + n) * spf)
        chunk = FrameChunk(
            session_id=self.session_id, seq=self._seq, first_frame=self._frame, frames=frames, audio=audio, audio_t0=self._frame * spf,
            alpha=alpha,
        )
        self._frame += n
        self._seq += 1
        return chunk

    def _lookahead_window(self, own: int, need: int) -> np.ndarray:
        """This chunk's audio plus the look-ahead after it.

        Missing chunk audio is silence (it is what plays). When the chunk is whole but the audio after
        it has not arrived yet (a caller that pushes one chunk and asks for it at once), the look-ahead
        mirrors the chunk's last samples: the voice is assumed to carry on as it was, instead of a
        silence that would dip the mouth at every chunk boundary.
        """
        have = self._pending.shape[0]
        if have >= need:
            return self._pending[:need]
        ahead = np.zeros(need, dtype=np.float32)
        ahead[:have] = self._pending
        if have >= own:
            missing = need - have
            ahead[have:] = self._pending[have - missing : have][::-1]
        return ahead

    def _render(self, frame: int, opening: float, shape: float, out: np.ndarray, alpha_out: np.ndarray | None) -> None:
        fps = float(self.spec.fps)
        blink = blink_amount(frame, fps, self.seed) if self.config.blinks else 0.0
        self._emphasis += _EMPHASIS_RATE * (opening - self._emphasis)
        if self.config.idle_motion:
            pose = speaking_pose(idle_pose(frame, fps, self.seed), self._emphasis)
            self.renderer.render(opening, shape, blink, pose, out=out, alpha_out=alpha_out)
        else:
            self.renderer.render(opening, shape, blink, out=out, alpha_out=alpha_out)

    def reset(self) -> None:
        self._reset_audio()


class LiteEngine:
    """CPU engine that animates a portrait (or the built-in avatar) from audio in real time."""

    name = "lite"

    def __init__(self, config: LiteConfig | None = None) -> None:
        self.config = config or LiteConfig()
        self.spec = self.config.spec()
        self._default: LiteRenderer | None = None
        self._default_matte: np.ndarray | None = None

    def _default_renderer(self) -> LiteRenderer:
        if self._default is None:
            side = max(self.config.width, self.config.height)
            image, layout = draw_default_avatar(side), default_avatar_layout(side)
            if (self.config.height, self.config.width) != image.shape[:2]:
                image, layout = fit_portrait(image, layout, self.config.width, self.config.height)
            self._default = LiteRenderer(image, layout, (self.config.width, self.config.height))
        return self._default

    def prepare_avatar(self, image: np.ndarray) -> LiteRenderer:
        """Locate the face in an RGB uint8 portrait and fit it to the output (raises ``NoFaceError``)."""
        layout = locate_face(image)
        log.info("lite: face at %s, eyes %s %s, mouth %s", layout.face_box, layout.left_eye, layout.right_eye, layout.mouth)
        return LiteRenderer(image, layout, (self.config.width, self.config.height))

    def start_session(self, request: SessionRequest) -> LiteSession:
        """A session; with ``request.extra["alpha"]`` its chunks carry the portrait's matte, moved with the face."""
        if request.avatar is None:
            # Renderers keep per-frame scratch state, so each session gets its own copy of the default.
            base = self._default_renderer()
            renderer = LiteRenderer(np.array(base.reference), base.layout, base.size)
            if request.extra.get("alpha"):
                if self._default_matte is None:
                    self._default_matte = portrait_matte(renderer.reference)
                renderer.matte = self._default_matte
        else:
            renderer = self.prepare_avatar(request.avatar)
            if request.extra.get("alpha"):
                renderer.matte = portrait_matte(renderer.reference)  # once per avatar, not per frame
        return LiteSession(request.session_id, renderer, self.config, int(request.seed))


def portrait_matte(image: np.ndarray) -> np.ndarray:
    """The person matte of a fitted portrait (uint8 (H, W), 255 = person), segmented once."""
    from engine.matting.segmenter import PersonSegmenter

    matte = PersonSegmenter().matte(image)
    matte.setflags(write=False)
    log.info("lite: portrait matte covers %.0f%% of the frame", 100.0 * float(matte.mean()) / 255.0)
    return matte
