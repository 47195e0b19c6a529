"""Webhook background work: one job per delivery attempt (queue "webhooks")."""

from __future__ import annotations

import procrastinate

from stablegate.config import Settings, get_settings

tasks = procrastinate.Blueprint()
QUEUE = "webhooks"


class _Configured:
    settings: Settings | None = None


def configure(settings: Settings) -> None:
    """The worker's settings (timeouts, schedule scale); unset, the environment's."""
    _Configured.settings = settings


def settings() -> Settings:
    return _Configured.settings or get_settings()


@tasks.task(name="webhooks.deliver", queue=QUEUE, pass_context=False)
async def deliver(delivery_id: str, step: int | None = None) -> str:
    """Attempt a delivery: `step` is its place in the retry schedule (None: a manual
    redelivery). Records the attempt and the next job in one transaction."""
    # Imported here: delivery imports the service, which imports this module's task.
    from stablegate.webhooks.delivery import run

    return await run(delivery_id, step, settings())
