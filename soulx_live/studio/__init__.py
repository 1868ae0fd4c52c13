"""The Studio: a local control page served by the daemon (loopback, token-protected).

``host.StudioHost`` composes it for one daemon run: ``auth`` (one-time login link → session cookie), ``server``
(aiohttp: the page, its JSON API and one WebSocket for preview, health and events), ``preview`` (a sink that
streams the avatar's frames with their audio to the page), ``gate`` (sinks the page can close and reopen),
``controls`` (what the page's buttons do to the daemon) and ``health`` (the ``/metrics`` figures as JSON).
The page itself is plain HTML/JS/CSS in ``static/`` (no build step, nothing fetched from elsewhere).
"""
