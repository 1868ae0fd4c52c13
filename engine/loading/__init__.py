"""Loading released checkpoint files into modules built on the meta device."""
