"""``soulx-live keys``: CURVE key pairs for the remote engine, and the server's allow-list.

- on the laptop: ``soulx-live keys`` writes ``client.key`` / ``client.key_secret`` and prints the public key;
- on the server: ``soulx-live keys --server`` writes ``server.key`` / ``server.key_secret`` and prints its public
  key (the laptop's ``--server-key``); ``soulx-live keys --allow=CLIENT_KEY`` lets a laptop in (with "=": a Z85 key may begin
  with "-", which argparse would take for an option).

Files are mode 0600 in a 0700 folder (``remote.keys_dir``, default ``~/.config/soulx-live/keys``). An existing
pair is kept unless ``--force``. Only public keys are printed.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

NAME = "keys"
HELP = "create a CURVE key pair for the remote engine (client, or --server), or --allow a client key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="store_true", help="the server's key pair (default: this laptop's client pair)")
    parser.add_argument("--allow", metavar="KEY", help="server: allow a client (its public key text or .key file)")
    parser.add_argument("--name", default=None, help="with --allow: a name for the client's key file (letters, digits, . _ -; default: from its hash)")
    parser.add_argument("--force", action="store_true", help="replace an existing key pair")
    parser.add_argument("--show", action="store_true", help="print the existing public key instead of creating one")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    config = load(args, {})
    from soulx_live.remote.keys import (
        add_allowed_key,
        create_key_pair,
        load_key_pair,
        public_key_text,
    )
    from soulx_live.remote.security import (
        CLIENT_KEY_NAME,
        SERVER_KEY_NAME,
        keys_dir,
    )

    folder = keys_dir(config.remote)
    if args.allow:
        public = public_key_text(args.allow)
        allowed_dir = config.remote.allowed_clients_dir or folder / "allowed"
        import hashlib

        # a file name from the key's hash: Z85 text may hold "/" and other characters no file name should
        name = args.name or f"client-{hashlib.sha256(public).hexdigest()[:12]}"
        path = add_allowed_key(allowed_dir, public, name)
        print(f"allowed client {public.decode()} ({path})")
        return 0
    name = SERVER_KEY_NAME if args.server else CLIENT_KEY_NAME
    if args.show:
        pair = load_key_pair(folder / f"{name}.key")
    else:
        pair = create_key_pair(folder, name, overwrite=args.force)
        print(f"wrote {folder / (name + '.key')} and {folder / (name + '.key_secret')} (mode 0600)")
    print(f"{name} public key: {pair.public.decode()}")
    if args.server:
        print(f"laptop: soulx-live run --remote THIS_HOST:47900 --server-key={pair.public.decode()}")
    else:
        print(f"server: soulx-live keys --allow={pair.public.decode()}")
    return 0
