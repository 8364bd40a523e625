"""The emulated silicon: DRAM, the memory encryption engine, the RMP, vCPUs and (in ``psp``) the
AMD Secure Processor. Nothing here trusts the host; the host drives it only through the same
operations real hardware offers a hypervisor."""
