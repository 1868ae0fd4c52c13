"""Pure nn.Module implementations of the FlashTalk model stack (no I/O, timing or device policy).

Parameter names are the released checkpoints' state-dict keys. Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""
