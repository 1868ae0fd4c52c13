"""soulx-live engines: the FlashTalk diffusion engine and the CPU lite renderer.

Top level: the engine interface (:mod:`engine.interface`), the FlashTalk streaming loop (:mod:`engine.flashtalk`,
with its config, sampler, state, drift monitor, pre/post-processing and audio front end), the tiny-random preset
(:mod:`engine.tiny`), building an engine from the daemon's settings (:mod:`engine.build`) and optional-package
checks (:mod:`engine.extras`). Subpackages: ``models`` (nn.Modules), ``ops`` (kernels), ``loading`` (checkpoints
and the weights-folder layout), ``parallel`` (multi-GPU), ``lite`` (CPU renderer), ``bench`` (benchmark),
``refcheck`` (golden-bundle checks).

The engine is the bottom layer: it imports only ``engine``, the standard library and third-party packages, never
``soulx_live`` or ``plugins`` (settings arrive as plain objects read by attribute), and it has no import cycles.
Importing this package has no side effects: no CUDA, no config reads, no heavy imports.
"""
