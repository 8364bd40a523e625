"""OVMF firmware-volume metadata: the GUIDed footer table and the SEV metadata it points to.

Layouts follow edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`` (the GUIDed structure
table placed just below the reset vector) and ``OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm``
(the ``ASEV`` section list QEMU walks for SEV-SNP launches).
"""
