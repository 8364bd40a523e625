"""The ``cvm`` command: one module per verb group, registered in :mod:`cvm.cli.main`."""
