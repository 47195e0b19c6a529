from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500

Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"values must be at most {MAX_METADATA_VALUE_CHARS} characters")
    return value


Metadata = Annotated[
    dict[str, str] | None,
    AfterValidator(_check_metadata),
    Field(description="Up to 50 string key/value pairs for your own use."),
]


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email: Email | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
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
