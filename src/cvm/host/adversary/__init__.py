"""What a malicious host can do to a guest, one module per attack family.

Nothing imports this package but the CLI, the scenarios and the tests.
"""
