"""The untrusted host: the hypervisor (``vmm``) and, in ``adversary``, what it can do to a guest."""
