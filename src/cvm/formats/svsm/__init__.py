"""Secure VM Service Module call-protocol structures (AMD "Secure VM Service Module for SEV-SNP
Guests", publication 58019, revision 1.00): the vTPM platform-command buffer, the attestation
request and the services manifest. Little-endian, as the SVSM specification defines them.
"""
