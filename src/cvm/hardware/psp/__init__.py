"""The AMD Secure Processor (PSP) firmware: SNP launch commands, guest requests, TCB.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860). The host drives it only with
commands that carry addresses and bytes (:class:`~cvm.hardware.psp.firmware.SecureProcessor`);
each refusal is a :class:`~cvm.errors.StatusError` with the status code of the spec
(:mod:`cvm.hardware.psp.status`). The chip secret and the keys derived from it never leave it.
"""
