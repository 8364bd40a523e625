"""The emulated boot chain, one module per stage: firmware, shim, GRUB, kernel EFI stub, UKI.

Each stage verifies what it loads (through :mod:`cvm.guest.boot.secureboot` and shim's rules)
and measures it through :class:`cvm.guest.boot.measured_boot.MeasuredBoot`, the way the real
component does; :mod:`cvm.guest.boot.chain` runs a whole boot.
"""
