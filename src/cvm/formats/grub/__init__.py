"""GRUB 2 formats: the EFI core image's embedded modules (config, prefix, memdisk).

GRUB 2.06 ``include/grub/kernel.h``; what GRUB does (its script engine and measurements) is
in :mod:`cvm.guest.boot.grub`.
"""
