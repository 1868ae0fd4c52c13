"""soulx-live: a local daemon that turns live audio into a live talking avatar.

The top layer (``engine < plugins < soulx_live``, checked by ``.importlinter``): the daemon (:mod:`.daemon`) and
its parts (:mod:`.live`), building a run from its config (:mod:`.factory`), the control socket (:mod:`.control`),
the CLI (:mod:`.cli`, :mod:`.commands`), config (:mod:`.config`), audio input (:mod:`.audio`), the frame bus
(:mod:`.bus`) and wire protocol (:mod:`.protocol`), the engine worker and its supervisor (:mod:`.worker`,
:mod:`.worker_group`, :mod:`.supervisor`, :mod:`.live_engine`), the push API (:mod:`.push`) and TTS (:mod:`.tts`).
It may import ``engine`` and ``plugins``; nothing below imports it. The daemon side never imports torch: only the
engine worker and in-process engines do.
"""

__version__ = "0.1.0"
