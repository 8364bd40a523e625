"""PE/COFF images, their attribute certificate table, the Authenticode image hash and SBAT.

Microsoft "PE Format" (Microsoft Learn, revision of 2024-03), Microsoft "Windows Authenticode
Portable Executable Signature Format" (version 1.0, 2008) and shim's SBAT.md.
"""
