"""soulx-live engines: the FlashTalk diffusion engine and the CPU lite renderer.

Importing this package has no side effects: no CUDA, no config reads, no heavy imports.
"""
