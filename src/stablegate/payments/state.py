"""The payment state machine (design 0004), in one pure function: what a payment becomes
after something happens, and which events that emits. No I/O: the service loads, calls
`transition`, stores the result and its events in one transaction.

`status` is where the payment is; `paid` and `late` say what was paid, from *confirmed*
amounts only (seen money can still vanish in a reorg). Late money (mined at or after the
expiry, or seen while the payment was expired or canceled) counts in `paid` and in what
the merchant received, never towards `succeeded`: the quote it would complete was over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

OPEN = ("requires_payment", "processing")
TERMINAL = ("succeeded", "expired", "canceled")
STATUSES = OPEN + TERMINAL
PAID = ("none", "underpaid", "exact", "overpaid")


class InvalidTransition(Exception):
    """A request the payment's state does not allow (e.g. cancel after money was seen)."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"a {status} payment cannot be {action}")
        self.status, self.action = status, action


@dataclass(frozen=True)
class PaymentState:
    status: str
    due: int  # base units of the quoted asset
    seen: int = 0  # seen, not yet confirmed, not orphaned
    confirmed: int = 0
    paid: str = "none"
    late: bool = False
    late_accepted: bool = False  # the merchant keeps the late money (else: refund it)
    late_seen: int = 0  # the parts of `seen` and `confirmed` that are late money
    late_confirmed: int = 0

    def __post_init__(self) -> None:
        assert self.status in STATUSES and self.paid in PAID and self.due > 0
        assert 0 <= self.late_seen <= self.seen and 0 <= self.late_confirmed <= self.confirmed
        assert self.late or not self.late_accepted, "only late money is accepted"

    @property
    def on_time_seen(self) -> int:
        return self.seen - self.late_seen

    @property
    def on_time_confirmed(self) -> int:
        return self.confirmed - self.late_confirmed


@dataclass(frozen=True)
class Receipts:
    """The payment's on-chain totals after an observation changed (seen, confirmed,
    orphaned), with the parts of them that are late money. `late_money`: the change is
    late money seen (a new transfer, or one mined again after a reorg); `late_arrival`: a
    new transfer of it."""

    seen: int
    confirmed: int
    late_arrival: bool = False
    late_money: bool = False
    late_seen: int = 0
    late_confirmed: int = 0

    def __post_init__(self) -> None:
        assert self.late_money or not self.late_arrival, "a late arrival is late money"
        assert 0 <= self.late_seen <= self.seen and 0 <= self.late_confirmed <= self.confirmed


@dataclass(frozen=True)
class Expire:
    pass


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class AcceptLate:
    """The merchant keeps money that arrived after the payment expired or was canceled."""


Happening = Receipts | Expire | Cancel | AcceptLate


def paid_flag(confirmed: int, due: int) -> str:
    if confirmed == 0:
        return "none"
    if confirmed < due:
        return "underpaid"
    return "exact" if confirmed == due else "overpaid"


def expirable(state: PaymentState) -> bool:
    """Unpaid, or underpaid with nothing on its way: an underpaid payment does not wait
    for the rest for ever (its quote's rate is long gone); money after its expiry is late.
    Seen on-time money not yet confirmed may complete it, so it waits for that; late
    money cannot, so it does not."""
    if state.status == "requires_payment":
        return True
    return state.status == "processing" and state.on_time_seen == 0 and state.on_time_confirmed < state.due


def transition(state: PaymentState, happening: Happening) -> tuple[PaymentState, list[str]]:
    """The next state and the event types to record, in order."""
    if isinstance(happening, Expire):
        if not expirable(state):
            return state, []  # money is on its way, or the payment is over
        return replace(state, status="expired"), ["payment.expired"]
    if isinstance(happening, Cancel):
        if state.status != "requires_payment":
            raise InvalidTransition(state.status, "canceled")
        return replace(state, status="canceled"), ["payment.canceled"]
    if isinstance(happening, AcceptLate):
        if not state.late:
            raise InvalidTransition(state.status, "accepted (no late money)")
        if state.late_accepted:
            return state, []  # accepting twice changes nothing
        return replace(state, late_accepted=True), ["payment.late_accepted"]
    return _receipts(state, happening)


def _receipts(state: PaymentState, totals: Receipts) -> tuple[PaymentState, list[str]]:
    paid = paid_flag(totals.confirmed, state.due)
    status = state.status
    if status in OPEN:
        if totals.confirmed - totals.late_confirmed >= state.due:
            status = "succeeded"
        elif totals.seen + totals.confirmed > 0:
            status = "processing"  # with only late money left, expirable() lets it expire
        else:
            status = "requires_payment"  # what was seen was orphaned
    # Not "any money in an expired payment": an underpaid payment expires holding on-time
    # money. Money after a success is an overpayment, not late: nothing was left to pay.
    late = state.late or (state.status != "succeeded" and totals.late_money)
    # An acceptance covers the late money received so far: more of it asks again.
    reopened = state.late_accepted and totals.late_arrival
    accepted = state.late_accepted and not reopened
    new = replace(
        state,
        status=status,
        seen=totals.seen,
        confirmed=totals.confirmed,
        late_seen=totals.late_seen,
        late_confirmed=totals.late_confirmed,
        paid=paid,
        late=late,
        late_accepted=accepted,
    )
    events = [f"payment.{status}"] if status != state.status else []
    if paid != state.paid and paid in ("underpaid", "overpaid"):
        events.append(f"payment.{paid}")
    if (late and not state.late) or reopened:
        events.append("payment.paid_late")
    return new, events
