"""The daemon's control socket: :mod:`.server` answers status, stop and barge-in requests inside the daemon;
:mod:`.client` asks them from the CLI or another process. May import: ``soulx_live.protocol``,
``soulx_live.runtime_dir``, ``soulx_live.errors``, ``soulx_live.config``."""
