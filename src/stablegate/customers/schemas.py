from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from stablegate.kit.validation import NO_NUL_PATTERN, STORABLE, Metadata

# Explicit ranges (controls, space, DEL, C1 controls), not `\s`: regex dialects disagree on
# what `\s` covers (U+0085 is whitespace to Rust and Python, not to ECMA-262), and the
# schema's readers must accept exactly what the server does (schemathesis found one).
EMAIL_PART = r"[^@\x00-\x20\x7f-\x9f]+"
Email = Annotated[
    str, StringConstraints(max_length=320, pattern=rf"^{EMAIL_PART}@{EMAIL_PART}\.{EMAIL_PART}$"), STORABLE
]
Name = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL_PATTERN), STORABLE]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL_PATTERN), STORABLE]


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email: Email | None = None
    name: Name | None = None
    description: Description | None = None
    metadata: Metadata = None


class CustomerUpdate(CustomerCreate):
    """Fields present are replaced; `metadata` keys are merged, an empty value removes one."""


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["customer"] = "customer"
    id: str
    livemode: bool
    email: str | None
    name: str | None
    description: str | None
    metadata: dict[str, str]
    created: int


def to_schema(row: Any) -> Customer:
    return Customer(
        id=row.id,
        livemode=row.mode == "live",
        email=row.email,
        name=row.name,
        description=row.description,
        metadata=row.metadata_,
        created=int(row.created_at.timestamp()),
    )
