"""The push API: external apps (TTS hosts, agents) push PCM or text to a running daemon and receive
speech events (started, finished, interrupted with the played position).

Two transports share one request core (:mod:`soulx_live.push.core`):

- ZeroMQ (:mod:`soulx_live.push.server`): a ROUTER socket ``push`` (REQ clients) for requests and a PUB
  socket ``push-events`` for :class:`~soulx_live.push.utterances.SpeechEvent`; ipc in the private runtime
  folder, or tcp on ``bus.tcp_host`` when ``bus.transport=tcp``.
- HTTP + WebSocket on one port (:mod:`soulx_live.push.http`), only with ``push.http_enabled``.

Every request carries the push token (``push.token`` from the config file or ``SOULX_PUSH__TOKEN``, or the
file ``push.token_file``, else generated at start into ``<runtime_dir>/push.token``, mode 0600; never
``--set push.token=``, which the CLI refuses). The token itself is never logged; nothing a client sends
reaches the log unquoted, and failures are logged once per kind and interval (:mod:`.log_safe`).

May import :mod:`soulx_live.audio`, :mod:`soulx_live.tts`, ``soulx_live.config`` and ``soulx_live.runtime_dir``;
the daemon reaches it through :mod:`soulx_live.live.push_host` and :mod:`soulx_live.push_bridge`, never the reverse.
"""
