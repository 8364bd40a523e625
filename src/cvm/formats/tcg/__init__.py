"""The TCG PC Client event log: crypto-agile (TCG_PCR_EVENT2) and legacy SHA-1 formats.

TCG PC Client Platform Firmware Profile Specification (PFP), Family 2.0, Level 00,
Version 1.05 Revision 23, section 10 (event logging) and 9.4 (event types); the replay rules
(initial PCR values, StartupLocality) follow section 3.3.3 and the TPM 2.0 Library, Part 1.
"""
