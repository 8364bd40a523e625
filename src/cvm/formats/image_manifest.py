"""The schema names of an image bundle's manifest, ``image.json``, that cvm reads.

The owner's tools write and check the whole manifest (:mod:`cvm.image.bundle`); the host takes
only the file names it needs from it, and both refuse a schema they do not know rather than
guess at its fields.
"""

from __future__ import annotations

from cvm.errors import FormatError

MANIFEST_SCHEMA = "cvm-image/2"
FIRST_MANIFEST_SCHEMA = "cvm-image/1"  # before "seeded"; still read
KNOWN_SCHEMAS = (MANIFEST_SCHEMA, FIRST_MANIFEST_SCHEMA)


def check_schema(document: object, where: str) -> str:
    """The schema ``document`` (a parsed ``image.json`` at ``where``) claims, if cvm reads it."""
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema not in KNOWN_SCHEMAS:
        raise FormatError(f"{where}: schema {schema!r}, expected {MANIFEST_SCHEMA} "
                          f"(or {FIRST_MANIFEST_SCHEMA})")
    assert isinstance(schema, str)
    return schema
