"""Domain-free building blocks: ids, errors, pagination, idempotency, HTTP safety."""
