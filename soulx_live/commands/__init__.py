"""CLI commands that live in their own module; registered in ``soulx_live.cli.EXTRA_COMMANDS``.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, load) -> int``
(``load(args, extra_overrides)`` returns the effective :class:`~soulx_live.config.SoulxConfig`), and imports
nothing heavy at module level: every ``soulx-live`` invocation imports all of them to build the parser. They talk
to a running daemon through :mod:`soulx_live.control.client` or the push client, never by importing the daemon.
"""
