"""cvm: a confidential virtual machine platform in software."""

__version__ = "0.1.0"
