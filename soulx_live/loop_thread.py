"""An asyncio event loop on its own thread, for the HTTP servers that live beside the daemon's threads."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

__all__ = ["start_loop_thread"]


def start_loop_thread(name: str, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]],
                      on_loop: Callable[[asyncio.AbstractEventLoop], None]) -> threading.Thread:
    """Run ``setup()`` on a new loop in thread ``name``, then the loop until it is stopped, then ``teardown()``.

    ``on_loop`` gets the loop before ``setup`` runs. Returns once ``setup`` has finished; what it raised (a bind
    error) is raised here, and the thread is over then.
    """
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        on_loop(loop)
        try:
            loop.run_until_complete(setup())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, raised there
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(teardown())
        loop.close()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    ready.wait(10)
    if failure:
        raise failure[0]
    return thread
