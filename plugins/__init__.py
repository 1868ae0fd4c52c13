"""The sinks: where rendered chunks go (recorder, virtual camera, virtual microphone, OBS).

This is the middle layer, between the engine and the daemon (``engine < plugins < soulx_live``).
A module here may import the wire types of :mod:`engine.interface` (``ChunkSpec``, ``FrameChunk``),
the bottom-layer helpers such as :mod:`engine.extras`, other ``plugins`` modules (each sink's settings
live in :mod:`plugins.settings`), the standard library and third-party packages. It never imports
``soulx_live``, not even inside a function or under ``TYPE_CHECKING``: the daemon builds the sinks
and hands them their settings, so the sinks can be used and tested without it.
"""
