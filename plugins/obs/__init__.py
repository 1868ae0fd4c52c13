"""OBS Studio output: a live NUT/TCP feed read by an OBS Media Source, bound through obs-websocket v5.

- :mod:`plugins.obs.client`: the thin obsws-python adapter (timeouts, typed errors, reconnect).
- :mod:`plugins.obs.feed`: the feed server (rawvideo BGRA + pcm_s16le in NUT over TCP).
- :mod:`plugins.obs.setup`: create/update the scene and the ``ffmpeg_source`` input.
- :mod:`plugins.obs.sink`: :class:`~plugins.obs.sink.ObsSink`, the ``FrameSink`` the daemon builds.

Like the rest of :mod:`plugins`, these modules import only :mod:`engine.interface` wire types, their
settings (:class:`~plugins.settings.ObsConfig`), other ``plugins`` modules, the standard library and
third-party packages (obsws-python only inside functions: it is an optional extra); never ``soulx_live``.
Nothing heavy is imported here; import the submodules.
"""
