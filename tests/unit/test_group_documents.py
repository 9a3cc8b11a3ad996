"""Issue #17 finding 2: a group document's shape is checked before it is applied or cached."""

from __future__ import annotations

import json

import pytest

from twinfer.configserver.client import MAX_DOCUMENT_BYTES, BadGroupDocument, parse_document


def raw(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_well_shaped_document_passes():
    assert parse_document(raw(group="g", version=3, settings={"log_level": "warn"}), "g", "here")["version"] == 3


@pytest.mark.parametrize("body, message", [
    (raw(group="g", settings={}), "`version` must be a positive integer, got None"),
    (raw(group="g", version=True, settings={}), "got True"),  # bool is an int to isinstance
    (raw(group="g", version="3", settings={}), "got '3'"),
    (raw(group="g", version=0, settings={}), "got 0"),
    (raw(group="other", version=1, settings={}), "`group` is 'other', expected 'g'"),
    (raw(group="g", version=1, settings=[1]), "`settings` must be a JSON object"),
    (raw(group="g", version=1), "`settings` must be a JSON object"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b"null", "expected a JSON object, got NoneType"),
    (b"[" * 100_000, "not JSON"),
    (b" " * (MAX_DOCUMENT_BYTES + 1), "larger than"),
])
def test_badly_shaped_documents_are_refused_in_one_line(body, message):
    with pytest.raises(BadGroupDocument) as info:
        parse_document(body, "g", "http://cs/v1/groups/g")
    assert message in str(info.value) and str(info.value).startswith("http://cs/v1/groups/g: ")
    assert "\n" not in str(info.value)
