"""The webhook dispatcher (design 0005, "Dispatch"): claims due deliveries from
webhook_deliveries in batches with leases, attempts them concurrently over HTTP, records
plain successes in batches. One per worker process, beside procrastinate's worker.

- A claim is one short transaction: it leases up to the free slots' worth of due
  deliveries (the per-endpoint bound counted from live leases across every worker) and
  returns everything the attempts need.
- Each attempt runs with no transaction open. A plain success joins the next batch
  statement (the batch forms while the previous one is in flight); anything else goes
  through service.record_attempt (its own retried transaction). Recording releases the
  lease; a worker that dies leaves its leases to expire (the attempt timeout plus
  LEASE_MARGIN_S), after which the deliveries are claimed again with the same webhook-id.
- Lease hand-off: the batch statement also leases as many of each endpoint's next due
  deliveries as it released (its bound cannot be exceeded that way), up to the free
  slots but one, and they start at once: a busy endpoint's slots turn over without a
  claim, and one slot always stays for claims in due order.
- It sleeps until a NOTIFY (emit, redeliver), a slot frees, or the poll interval passes
  (retries come due by the clock). With wait=False it stops once a claim finds nothing
  due and nothing is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.webhooks import delivery, repository, schedule, service
from stablegate.webhooks.service import AttemptResult, Claim

log = structlog.get_logger(__name__)

POLL_INTERVAL_S = 1.0  # retries come due by the clock; new work wakes the dispatcher at once
CLAIM_BATCH_MAX = 64  # deliveries leased per claim statement
# A lease outlives the attempt's own budget by this much (recording, a slow event loop):
# an attempt still running is never claimed twice, a dead worker's deliveries wait this
# much longer than the timeout before they are tried again.
LEASE_MARGIN_S = 30.0
RELEASE_TIMEOUT_S = 2.0

CLAIMS = Counter("stablegate_webhook_claims_total", "Claim statements, by result (leased, empty, error).", ["result"])
CLAIM_BATCH = Histogram(
    "stablegate_webhook_claim_batch_size",
    "Deliveries leased by one non-empty claim.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
RECORD_BATCH = Histogram(
    "stablegate_webhook_record_batch_size",
    "Plain successes recorded by one statement.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
HANDOFFS = Counter(
    "stablegate_webhook_lease_handoffs_total",
    "Deliveries leased by the statement that recorded their endpoint's successes (no claim needed).",
)
LEASE_EXPIRIES = Counter(
    "stablegate_webhook_lease_expiries_total",
    "Deliveries claimed again after a lease ran out (a worker died or stalled mid-attempt).",
)
LEASES_HELD = Gauge("stablegate_webhook_leases_held", "Deliveries this process has leased and not yet recorded.")

# A success waiting for its batch; the future says whether its lease was handed off.
_Pending = tuple[Claim, AttemptResult, "asyncio.Future[bool]"]


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        concurrency: int,
        poll_interval_s: float = POLL_INTERVAL_S,
        batch_max: int = CLAIM_BATCH_MAX,
        lease_margin_s: float = LEASE_MARGIN_S,
        clock: Callable[[], dt.datetime] = delivery.utc_now,
    ) -> None:
        assert concurrency >= 1 and batch_max >= 1 and poll_interval_s > 0 and lease_margin_s >= 0
        self.db = db
        self.settings = settings
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.batch_max = batch_max
        self.lease_s = settings.webhook_timeout_s + lease_margin_s
        self.clock = clock
        self._in_flight: dict[asyncio.Task[None], str] = {}  # attempt task -> delivery id
        self._changed = asyncio.Event()  # a notify, or a slot freed
        self._successes: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, *, wait: bool = True) -> None:
        """Deliver until cancelled (wait=True), or until nothing is due and nothing is in
        flight (wait=False)."""
        log.info("webhook.dispatcher_started", concurrency=self.concurrency, lease_s=self.lease_s)
        try:
            async with self._listening():
                while True:
                    self._changed.clear()  # before the claim: a wake-up during it is kept
                    try:
                        if await self._claim():
                            continue  # a full batch: there may be more due at once
                    except Exception:
                        if not wait:
                            raise
                        # The database is away: what is in flight goes on, claims resume
                        # after a poll interval (the deliveries wait in the table).
                        log.exception("webhook.claim_failed")
                        CLAIMS.labels("error").inc()
                    if not wait and not self._in_flight:
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval_s):
                            await self._changed.wait()
        finally:
            await self._stop()

    async def _claim(self) -> bool:
        """Lease as many due deliveries as there are free slots; True if that filled the
        request (more may be due)."""
        limit = min(self.concurrency - len(self._in_flight), self.batch_max)
        if limit <= 0:
            return False
        async with self.db.session() as session:
            claims = await service.claim(session, limit, self.settings.webhook_endpoint_concurrency, self.lease_s)
        CLAIMS.labels("leased" if claims else "empty").inc()
        if claims:
            CLAIM_BATCH.observe(len(claims))
            log.debug("webhook.claimed", delivery_ids=[c.target.delivery_id for c in claims])
        self._start(claims)
        return len(claims) == limit

    def _start(self, claims: list[Claim]) -> None:
        for claim in claims:
            if claim.lease_expired:
                LEASE_EXPIRIES.inc()
                log.warning("webhook.lease_expired", delivery_id=claim.target.delivery_id)
            task = asyncio.create_task(self._deliver(claim))
            self._in_flight[task] = claim.target.delivery_id
        LEASES_HELD.set(len(self._in_flight))

    async def _deliver(self, claim: Claim) -> None:
        target = claim.target
        handed_off = False  # this slot went straight to the endpoint's next delivery
        try:
            result = await delivery.attempt(target, self.settings, self.clock)
            if service.is_plain_success(claim, result):
                handed_off = await self._record_success(claim, result)
                status = "succeeded"
            else:
                scale = self.settings.webhook_schedule_scale
                status = await self.db.retrying(
                    lambda session: service.record_attempt(session, claim, result, scale=scale)
                )
            fields = {
                "delivery_id": target.delivery_id,
                "endpoint_id": target.endpoint_id,
                "step": claim.step,
                "status_code": result.status_code,
                "duration_ms": result.duration_ms,
                "delivery_status": status,
            }
            if schedule.classify(result.status_code) is schedule.Outcome.SUCCEEDED:
                log.info("webhook.delivered", **fields)
            else:
                log.info("webhook.failed", error=result.error, **fields)
        except Exception:
            # The lease expires and the delivery is claimed again: nothing is lost.
            log.exception("webhook.record_failed", delivery_id=target.delivery_id)
        finally:
            self._in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            LEASES_HELD.set(len(self._in_flight))
            if not handed_off:  # a slot freed: claim (a handed-off one is already in use)
                self._changed.set()

    async def _record_success(self, claim: Claim, result: AttemptResult) -> bool:
        """Join the next batch of plain successes and wait until it is written; True if
        its slot was handed off."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._successes.append((claim, result, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Write waiting successes, one statement per batch, until none are left; what
        arrives while a batch is written forms the next one."""
        while self._successes:
            batch = self._successes[: repository.MAX_RECORD_BATCH]
            del self._successes[: len(batch)]
            # One attempt per delivery and statement (a delivery claimed again after its
            # lease expired waits for the next batch).
            seen: set[str] = set()
            now: list[_Pending] = []
            for item in batch:
                if item[0].target.delivery_id in seen:
                    self._successes.append(item)
                else:
                    seen.add(item[0].target.delivery_id)
                    now.append(item)
            # Hand-off keeps one slot free for claims in due order: a busy endpoint's
            # deliveries can never take every slot from the others.
            handoff_max = max(0, self.concurrency - 1 - (len(self._in_flight) - len(now)))
            try:
                async with self.db.session() as session:
                    handed = await service.record_successes(
                        session, [(c, r) for c, r, _ in now], handoff_max=handoff_max, lease_s=self.lease_s
                    )
            except Exception as exc:
                for *_, future in now:
                    if not future.done():
                        future.set_exception(exc)
            else:
                RECORD_BATCH.observe(len(now))
                if handed:
                    HANDOFFS.inc(len(handed))
                    log.debug("webhook.handed_off", delivery_ids=[c.target.delivery_id for c in handed])
                    self._start(handed)
                for n, (*_, future) in enumerate(now):
                    if not future.done():
                        future.set_result(n < len(handed))

    async def _stop(self) -> None:
        """Cancel what is in flight and release its leases (best effort: a lease not
        released expires), so another worker can take the deliveries at once."""
        tasks = list(self._in_flight)
        unrecorded = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
        await asyncio.gather(*tasks, *([self._flusher] if self._flusher else []), return_exceptions=True)
        self._in_flight.clear()
        LEASES_HELD.set(0)
        if unrecorded:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S), self.db.session() as session:
                    await repository.release_leases(session, unrecorded)
            except Exception:
                log.warning("webhook.leases_not_released", delivery_ids=unrecorded)
            else:
                log.info("webhook.leases_released", delivery_ids=unrecorded)

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[None]:
        """LISTEN on a connection of its own for the notifications of emit and redeliver."""

        def notified(*_: Any) -> None:
            self._changed.set()

        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.add_listener(repository.NOTIFY_CHANNEL, notified)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await driver.remove_listener(repository.NOTIFY_CHANNEL, notified)
