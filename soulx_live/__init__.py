"""soulx-live: a local daemon that turns live audio into a live talking avatar."""

__version__ = "0.1.0"
