"""System memory: sparse DRAM, the memory encryption engine and the reverse map table."""
