"""UEFI wire formats: signature lists, variables and their authentication, the OVMF varstore.

UEFI Specification 2.10 (August 2022) §8.2 (variable services, EFI_VARIABLE_AUTHENTICATION_2),
§32.4 (signature database), and edk2 MdeModulePkg/Include/Guid/VariableFormat.h.
"""
