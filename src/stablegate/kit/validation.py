"""Request field types shared by every schema: text that PostgreSQL can store."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema

# PostgreSQL text and jsonb reject NUL; say so in the schema so clients (and fuzzers) know.
NO_NUL_PATTERN = r"^[^\x00]*$"


def _storable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogate characters") from None
    return value


# Use as: Annotated[str, StringConstraints(max_length=…, pattern=NO_NUL_PATTERN), STORABLE]
STORABLE = AfterValidator(_storable)


def _whole(value: object) -> object:
    # JSON Schema counts 1800.0 as an integer and so do generated clients; strict models
    # would refuse it. Booleans and strings stay refused (strict int validation).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer field in a strict model that also takes integral JSON numbers (`1800.0`).
Integer = Annotated[int, BeforeValidator(_whole)]


MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500

MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_CHARS, pattern=NO_NUL_PATTERN), STORABLE
]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS, pattern=NO_NUL_PATTERN), STORABLE]
# Spelled out: pydantic would render the key pattern as patternProperties, which lets any
# value through for keys that do not match and so misdescribes what we accept.
_METADATA_JSON_SCHEMA = {
    "type": "object",
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY_CHARS, "pattern": NO_NUL_PATTERN},
    "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_CHARS, "pattern": NO_NUL_PATTERN},
}
Metadata = Annotated[
    Annotated[dict[MetadataKey, MetadataValue], WithJsonSchema(_METADATA_JSON_SCHEMA)] | None,
    Field(
        max_length=MAX_METADATA_KEYS,
        description="Up to 50 key/value pairs for your own use (keys ≤ 40, values ≤ 500 characters). "
        "On update, an empty value removes that key.",
    ),
]
