"""Pure wire formats: bytes <-> frozen dataclasses, no I/O, no policy, no crypto."""
