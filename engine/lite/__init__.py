"""The lite engine: a CPU avatar renderer that animates a portrait from audio in real time.

No GPU, no weights: a Haar-cascade face locator (models ship inside opencv), a built-in drawn avatar,
audio-envelope mouth features, procedural blinks / idle motion / breathing, and a remap-based renderer.

Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""
from engine.lite.engine import LiteConfig, LiteEngine, LiteSession
from engine.lite.face_locator import FaceLayout, NoFaceError, locate_face

__all__ = ["FaceLayout", "LiteConfig", "LiteEngine", "LiteSession", "NoFaceError", "locate_face"]
