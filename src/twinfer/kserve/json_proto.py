"""Protobuf message -> JSON-ready dict, the way Triton's HTTP endpoint renders them: proto field names, and 64-bit
integers as JSON numbers (protobuf's own json_format writes them as strings, which perf_analyzer rejects)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}


def _fix(value: Any, descriptor: Descriptor) -> Any:
    for field in descriptor.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    value[field.name] = {k: _fix(v, value_field.message_type) for k, v in item.items()}
            elif isinstance(item, list):
                value[field.name] = [_fix(v, field.message_type) for v in item]
            else:
                value[field.name] = _fix(item, field.message_type)
        elif field.type in _INT64_TYPES:
            value[field.name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value


def to_json_dict(message: Message) -> dict[str, Any]:
    raw = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _fix(raw, message.DESCRIPTOR)
