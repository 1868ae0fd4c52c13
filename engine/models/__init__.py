"""Pure nn.Module implementations of the FlashTalk model stack (no I/O, timing or device policy)."""
