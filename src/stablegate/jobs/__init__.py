"""Background jobs on procrastinate, enqueued inside the caller's transaction (outbox)."""
