"""What a malicious host can do to a guest, one module per attack family.

- :mod:`.threat`: the declared attack (name, family, what it does, expected outcome per mode),
  verdicts and the mechanisms that block attacks;
- :mod:`.lab`: what an attack acts on — a live VM, the host's powers, the guest's behaviour;
- the families: :mod:`.memory`, :mod:`.registers`, :mod:`.cpu`, :mod:`.launch`,
  :mod:`.evidence`, :mod:`.boot_files`, :mod:`.state`; :mod:`.catalog` lists them all;
- :mod:`.canary` and :mod:`.host_view`: the scan of everything the host can read for any 8-byte
  run of any secret.

Nothing imports this package but the CLI, the scenarios and the tests.
"""
