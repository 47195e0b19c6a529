"""Request field types shared by every schema: text that PostgreSQL can store."""

from __future__ import annotations

from pydantic import AfterValidator

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
