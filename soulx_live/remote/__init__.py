"""The remote engine: ``soulx-live serve`` hosts the engine on a GPU machine; ``soulx-live run --remote HOST:PORT``
captures audio on the laptop, sends it up and feeds the local sinks with what comes down.

- :mod:`~soulx_live.remote.keys`: CURVE key pairs (files mode 0600) and the server's allow-list.
- :mod:`~soulx_live.remote.security`: how each remote socket is secured (CURVE, the plaintext policy, ZAP).
- :mod:`~soulx_live.remote.wire`: the messages on the link, each validated (version, sizes, types).
- :mod:`~soulx_live.remote.codec`: H.264 video (PyAV/libx264, zero-latency) and 16-bit PCM audio.
- :mod:`~soulx_live.remote.jitter`: the laptop's jitter buffer (sized from measured jitter, late chunks dropped).
- :mod:`~soulx_live.remote.server`: the server loop around a supervised engine worker.
- :mod:`~soulx_live.remote.link`: the laptop's end of the link (handshake, reconnect, decode thread).
"""
