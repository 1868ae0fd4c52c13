"""Building a run from its configuration: the engine (:mod:`.engine`), the sinks (:mod:`.sinks`), the audio
source (:mod:`.sources`) and where the engine runs (:mod:`.isolation`).

Heavy and optional packages are imported inside the builders, never at module import. The engine factory is
what the worker process uses too, so it imports nothing that hosts sinks. May import: ``engine``, ``plugins``
(only :mod:`.sinks`), ``soulx_live.config``, ``soulx_live.errors``, ``soulx_live.audio``, ``soulx_live.tts``.
"""
