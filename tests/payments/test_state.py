"""The payment state machine, exhaustively: every status × every kind of happening, then
random sequences (hypothesis) against the rules of design 0004."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stablegate.payments.state import (
    STATUSES,
    AcceptLate,
    Cancel,
    Expire,
    InvalidTransition,
    PaymentState,
    Receipts,
    paid_flag,
    transition,
)

DUE = 100
TOTALS = [Receipts(0, 0), Receipts(40, 0), Receipts(0, 40), Receipts(60, 40), Receipts(0, 100), Receipts(0, 150)]


def reachable(status: str, r: Receipts) -> bool:
    """The (status, totals) pairs the machine can be in."""
    if status == "succeeded":
        return r.confirmed >= DUE
    if status == "requires_payment":
        return r.seen + r.confirmed == 0
    if status == "processing":
        return r.seen + r.confirmed > 0 and r.confirmed < DUE
    return True


def states() -> list[PaymentState]:
    return [
        PaymentState(status, DUE, seen=r.seen, confirmed=r.confirmed, paid=paid_flag(r.confirmed, DUE))
        for status, r in itertools.product(STATUSES, TOTALS)
        if reachable(status, r)
    ]


@pytest.mark.parametrize("state", states(), ids=lambda s: f"{s.status}-{s.seen}-{s.confirmed}")
@pytest.mark.parametrize("totals", TOTALS, ids=lambda r: f"to-{r.seen}-{r.confirmed}")
@pytest.mark.parametrize("late_money", [False, True], ids=["", "late-money"])
def test_every_state_and_receipt_change(state: PaymentState, totals: Receipts, late_money: bool) -> None:
    totals = replace(totals, late_money=late_money)
    new, events = transition(state, totals)
    assert new.paid == paid_flag(totals.confirmed, DUE) and (new.seen, new.confirmed) == (totals.seen, totals.confirmed)
    if state.status in ("succeeded", "expired", "canceled"):
        assert new.status == state.status  # over is over; money still counts (late / overpaid)
        # late: money seen after the payment closed, not any money (an underpaid payment
        # expires holding on-time money)
        assert new.late == (state.status != "succeeded" and late_money)
    elif totals.confirmed >= DUE:
        assert new.status == "succeeded" and events[0] == "payment.succeeded"
    elif totals.seen + totals.confirmed > 0:
        assert new.status == "processing"
    else:
        assert new.status == "requires_payment"
    assert (new.status != state.status) == any(e == f"payment.{new.status}" for e in events)
    assert ("payment.overpaid" in events) == (new.paid == "overpaid" and state.paid != "overpaid")
    assert ("payment.paid_late" in events) == (new.late and not state.late)


@pytest.mark.parametrize("state", states(), ids=lambda s: f"{s.status}-{s.seen}-{s.confirmed}")
def test_every_state_and_expiry_or_cancel(state: PaymentState) -> None:
    expired, events = transition(state, Expire())
    # unpaid, or underpaid with nothing on its way (seen money may still complete it)
    if state.status == "requires_payment" or (state.status == "processing" and state.seen == 0):
        assert (expired, events) == (replace(state, status="expired"), ["payment.expired"])
        assert expired.paid == state.paid  # an underpaid payment stays underpaid
    else:
        assert (expired, events) == (state, [])
    if state.status == "requires_payment":
        assert transition(state, Cancel()) == (PaymentState("canceled", DUE), ["payment.canceled"])
    else:
        with pytest.raises(InvalidTransition):
            transition(state, Cancel())


@pytest.mark.parametrize("state", states(), ids=lambda s: f"{s.status}-{s.seen}-{s.confirmed}")
@pytest.mark.parametrize("late", [False, True])
def test_only_late_money_is_accepted_and_only_once(state: PaymentState, late: bool) -> None:
    if not late:
        with pytest.raises(InvalidTransition):
            transition(state, AcceptLate())
        return
    flagged = replace(state, late=True)
    accepted, events = transition(flagged, AcceptLate())
    assert (accepted, events) == (replace(flagged, late_accepted=True), ["payment.late_accepted"])
    assert transition(accepted, AcceptLate()) == (accepted, [])
    # A confirmation or a reorg of money already there keeps the decision...
    confirmed, events = transition(accepted, Receipts(0, accepted.seen + accepted.confirmed))
    assert confirmed.late and confirmed.late_accepted and "payment.paid_late" not in events
    # ...new late money asks again.
    more, events = transition(
        accepted, Receipts(accepted.seen + 10, accepted.confirmed, late_arrival=True, late_money=True)
    )
    assert more.late and not more.late_accepted and "payment.paid_late" in events


@st.composite
def receipts(draw: st.DrawFn) -> Receipts:
    late_money = draw(st.booleans())
    late_arrival = late_money and draw(st.booleans())
    return Receipts(draw(st.integers(0, 300)), draw(st.integers(0, 300)), late_arrival, late_money)


happenings = st.one_of(
    receipts(),
    st.just(Expire()),
    st.just(Cancel()),
    st.just(AcceptLate()),
)


@given(st.lists(happenings, max_size=12))
def test_random_sequences_keep_the_rules(sequence: list[object]) -> None:
    state = PaymentState("requires_payment", DUE)
    for happening in sequence:
        try:
            new, events = transition(state, happening)  # type: ignore[arg-type]
        except InvalidTransition:
            refusable = (isinstance(happening, Cancel) and state.status != "requires_payment") or (
                isinstance(happening, AcceptLate) and not state.late
            )
            assert refusable, (state, happening)
            continue
        assert new.late or not new.late_accepted  # only late money is accepted
        if state.late_accepted and not new.late_accepted:  # undone only by new late money, said again
            assert isinstance(happening, Receipts) and happening.late_arrival and "payment.paid_late" in events
        if state.status in ("succeeded", "expired", "canceled"):
            assert new.status == state.status  # terminal statuses are never left
        if new.status == "succeeded" and state.status != "succeeded":
            assert new.confirmed >= DUE and events[0] == "payment.succeeded"
        if new.status == "expired" and state.status != "expired":  # never with money on its way
            assert state.status == "requires_payment" or (state.seen == 0 and state.confirmed < DUE)
        if new.late and not state.late:  # only money after the close is late
            assert isinstance(happening, Receipts) and happening.late_money and state.status in ("expired", "canceled")
        if new.status in ("requires_payment", "processing"):
            assert reachable(new.status, Receipts(new.seen, new.confirmed))
        assert new.paid == paid_flag(new.confirmed, DUE)
        state = new
