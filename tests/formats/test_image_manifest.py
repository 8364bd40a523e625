"""The manifest schemas cvm reads, checked the same way by the owner's loader and the host."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.image_manifest import check_schema


@pytest.mark.parametrize("schema", ["cvm-image/2", "cvm-image/1"])
def test_the_known_schemas_are_returned(schema: str) -> None:
    assert check_schema({"schema": schema}, "x/image.json") == schema


@pytest.mark.parametrize("document", [[], "cvm-image/2", None, 2, [("schema", "cvm-image/2")]])
def test_a_document_that_is_not_an_object_claims_no_schema(document: object) -> None:
    with pytest.raises(FormatError, match=r"^x/image.json: schema None, expected cvm-image/2 "
                                          r"\(or cvm-image/1\)$"):
        check_schema(document, "x/image.json")
