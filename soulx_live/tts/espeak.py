"""espeak-ng through its C library (ctypes): PCM from the synth callback and phoneme events with their times.

Why the library and not the ``espeak-ng`` program: only the C API reports phoneme timings (the CLI's ``--pho``
needs an mbrola voice), and it is ~10x faster (no process start). The library is process-global and not
thread-safe, so one lock serialises every call; it is initialised once, on first use. Which library (the
``espeakng-loader`` wheel's or the system's) is decided by :mod:`soulx_live.tts.espeak_library`.
"""
from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np

from soulx_live.tts.base import PhonemeSpan, TtsError, Utterance
from soulx_live.tts.espeak_library import INSTALL_HINT, EspeakLibrary, find_espeak_library

__all__ = ["EspeakSynthesizer", "espeak_in_use"]

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_native_rate = 0
_in_use = ""  # "espeak-ng 1.52.0 (data ...) from wheel espeakng-loader 0.2.4 /.../libespeak-ng.so" once loaded


def _load(found: EspeakLibrary) -> tuple[ctypes.CDLL, int, str]:
    """Open and initialise ``found``; returns the library, its native sample rate and its version and data folder."""
    try:
        lib = ctypes.CDLL(found.library)
    except OSError as exc:
        raise TtsError(f"the espeak-ng library is not installed ({exc}); {INSTALL_HINT}") from None
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    data = found.data_dir.encode() if found.data_dir else None
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
                                 _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
    if rate <= 0:
        raise TtsError(f"espeak-ng ({found.describe()}) did not initialise (its data files are missing?); "
                       f"{INSTALL_HINT}")
    data_path = ctypes.c_char_p()
    version = (lib.espeak_Info(ctypes.byref(data_path)) or b"?").decode("utf-8", "replace")
    # The data folder the library actually opened (the system one may come from ESPEAK_DATA_PATH).
    where = (data_path.value or b"?").decode("utf-8", "replace")
    return lib, rate, f"{version} (data {where})"


def _library() -> tuple[ctypes.CDLL, int]:
    global _lib, _native_rate, _in_use
    if _lib is None:
        found = find_espeak_library()
        lib, rate, version = _load(found)
        _lib, _native_rate, _in_use = lib, rate, f"espeak-ng {version} from {found.describe()}"
        log.info("using %s", _in_use)
    return _lib, _native_rate


def espeak_in_use() -> str:
    """Which espeak-ng this process speaks with (loads it on first call); raises :class:`TtsError` if none."""
    with _lock:
        _library()
    return _in_use


class EspeakSynthesizer:
    """espeak-ng voice ``voice`` at ``rate_wpm``; output resampled to ``sample_rate`` (libswresample)."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", rate_wpm: int = 160, sample_rate: int = 16000) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.sample_rate = sample_rate
        espeak_in_use()  # fail now, with the install hint, rather than at the first line

    def synthesize(self, text: str, voice: str | None = None) -> Utterance:
        if not text.strip():
            raise TtsError("nothing to say: the text is empty")
        pcm, native, phonemes = self._synth_native(text, voice or self.voice)
        from soulx_live.audio.resample import resample

        speech = resample(pcm, native, self.sample_rate) if native != self.sample_rate else pcm
        return Utterance(text=text, pcm=speech.astype(np.float32, copy=False), sample_rate=self.sample_rate,
                         phonemes=tuple(phonemes))

    def _synth_native(self, text: str, voice: str) -> tuple[np.ndarray, int, list[PhonemeSpan]]:
        chunks: list[np.ndarray] = []
        starts: list[tuple[float, str]] = []

        def on_audio(wav: ctypes.POINTER(ctypes.c_short), n: int, events: ctypes.POINTER(_Event)) -> int:
            if n > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0)
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                ev = events[i]
                if ev.type == _EVENT_PHONEME:
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    starts.append((ev.audio_position / 1000.0, name))
                i += 1
            return 0

        callback = _CALLBACK(on_audio)
        data = text.encode("utf-8") + b"\0"
        with _lock:
            lib, native = _library()
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise TtsError(f"espeak-ng has no voice {voice!r}; `espeak-ng --voices` lists them (set tts.voice)")
            lib.espeak_SetParameter(_RATE, int(self.rate_wpm), 0)
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        if status != 0:
            raise TtsError(f"espeak-ng failed to synthesise (error {status})")
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        end_s = pcm.shape[0] / native
        spans = [PhonemeSpan(t, starts[k + 1][0] if k + 1 < len(starts) else end_s, name)
                 for k, (t, name) in enumerate(starts) if name.strip()]
        return pcm, native, [s for s in spans if s.end_s > s.start_s]
