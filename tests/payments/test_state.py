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
    expirable,
    paid_flag,
    transition,
)

DUE = 100
# Totals with late parts: late money counts in `paid`, never towards `succeeded`.
TOTALS = [
    Receipts(0, 0),
    Receipts(40, 0),
    Receipts(0, 40),
    Receipts(60, 40),
    Receipts(0, 100),
    Receipts(0, 150),
    Receipts(40, 0, late_seen=40),
    Receipts(60, 40, late_seen=30),
    Receipts(0, 100, late_confirmed=40),
    Receipts(0, 150, late_confirmed=50),
]


def on_time_confirmed(r: Receipts | PaymentState) -> int:
    return r.confirmed - r.late_confirmed


def reachable(status: str, r: Receipts) -> bool:
    """The (status, totals) pairs the machine can be in."""
    if status == "succeeded":
        return on_time_confirmed(r) >= DUE
    if status == "requires_payment":
        return r.seen + r.confirmed == 0
    if status == "processing":
        return r.seen + r.confirmed > 0 and on_time_confirmed(r) < DUE
    return True


def states() -> list[PaymentState]:
    return [
        PaymentState(
            status,
            DUE,
            seen=r.seen,
            confirmed=r.confirmed,
            paid=paid_flag(r.confirmed, DUE),
            late=r.late_seen + r.late_confirmed > 0,
            late_seen=r.late_seen,
            late_confirmed=r.late_confirmed,
        )
        for status, r in itertools.product(STATUSES, TOTALS)
        if reachable(status, r)
    ]


def state_id(s: PaymentState) -> str:
    return f"{s.status}-{s.seen}-{s.confirmed}-late-{s.late_seen}-{s.late_confirmed}"


@pytest.mark.parametrize("state", states(), ids=state_id)
@pytest.mark.parametrize(
    "totals", TOTALS, ids=lambda r: f"to-{r.seen}-{r.confirmed}-late-{r.late_seen}-{r.late_confirmed}"
)
@pytest.mark.parametrize("late_money", [False, True], ids=["", "late-money"])
def test_every_state_and_receipt_change(state: PaymentState, totals: Receipts, late_money: bool) -> None:
    totals = replace(totals, late_money=late_money)
    new, events = transition(state, totals)
    assert new.paid == paid_flag(totals.confirmed, DUE) and (new.seen, new.confirmed) == (totals.seen, totals.confirmed)
    assert (new.late_seen, new.late_confirmed) == (totals.late_seen, totals.late_confirmed)
    # late: late money seen, not any money in a closed payment (an underpaid payment expires
    # holding on-time money); after a success more money is an overpayment
    assert new.late == (state.late or (state.status != "succeeded" and late_money))
    if state.status in ("succeeded", "expired", "canceled"):
        assert new.status == state.status  # over is over; money still counts (late / overpaid)
    elif on_time_confirmed(totals) >= DUE:
        assert new.status == "succeeded" and events[0] == "payment.succeeded"
    elif totals.seen + totals.confirmed > 0:
        assert new.status == "processing"
    else:
        assert new.status == "requires_payment"
    assert (new.status != state.status) == any(e == f"payment.{new.status}" for e in events)
    assert ("payment.overpaid" in events) == (new.paid == "overpaid" and state.paid != "overpaid")
    assert ("payment.paid_late" in events) == (new.late and not state.late)


@pytest.mark.parametrize("state", states(), ids=state_id)
def test_every_state_and_expiry_or_cancel(state: PaymentState) -> None:
    expired, events = transition(state, Expire())
    # unpaid, or underpaid with no on-time money on its way (it may still complete the
    # payment; late money cannot)
    if state.status == "requires_payment" or (state.status == "processing" and state.seen == state.late_seen):
        assert (expired, events) == (replace(state, status="expired"), ["payment.expired"])
        assert expired.paid == state.paid  # an underpaid payment stays underpaid
    else:
        assert (expired, events) == (state, [])
    if state.status == "requires_payment":
        assert transition(state, Cancel()) == (replace(state, status="canceled"), ["payment.canceled"])
    else:
        with pytest.raises(InvalidTransition):
            transition(state, Cancel())


@pytest.mark.parametrize("state", states(), ids=state_id)
@pytest.mark.parametrize("late", [False, True])
def test_only_late_money_is_accepted_and_only_once(state: PaymentState, late: bool) -> None:
    if not (late or state.late):  # a state holding late money is flagged already
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
    seen, confirmed = draw(st.integers(0, 300)), draw(st.integers(0, 300))
    late_seen, late_confirmed = draw(st.integers(0, seen)), draw(st.integers(0, confirmed))
    return Receipts(seen, confirmed, late_arrival, late_money, late_seen, late_confirmed)


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
        if new.status == "succeeded" and state.status != "succeeded":  # by on-time money only
            assert on_time_confirmed(new) >= DUE and events[0] == "payment.succeeded"
        if new.status == "expired" and state.status != "expired":  # never with on-time money on its way
            assert state.status == "requires_payment" or (
                state.seen == state.late_seen and on_time_confirmed(state) < DUE
            )
        if new.late and not state.late:  # only late money is late, and never after a success
            assert isinstance(happening, Receipts) and happening.late_money and state.status != "succeeded"
        if new.status in ("requires_payment", "processing"):
            totals = Receipts(new.seen, new.confirmed, late_seen=new.late_seen, late_confirmed=new.late_confirmed)
            assert reachable(new.status, totals)
        assert new.paid == paid_flag(new.confirmed, DUE)
        state = new


def test_late_money_in_an_open_payment_is_flagged_and_never_completes_it() -> None:
    """60 seen on time, then 40 mined after the expiry while the 60 still confirms: the
    40 is late (the merchant accepts or refunds it), and the payment expires with what
    came on time instead of succeeding on money its quote no longer covered."""
    seen = transition(PaymentState("requires_payment", DUE), Receipts(60, 0))[0]
    flagged, events = transition(seen, Receipts(100, 0, late_arrival=True, late_money=True, late_seen=40))
    assert (flagged.status, flagged.late, events) == ("processing", True, ["payment.paid_late"])
    assert not expirable(flagged)  # the on-time 60 may still be orphaned or confirmed
    confirmed, events = transition(flagged, Receipts(0, 100, late_confirmed=40))
    assert (confirmed.status, confirmed.paid, events) == ("processing", "exact", [])
    assert expirable(confirmed)
    assert transition(confirmed, Expire()) == (replace(confirmed, status="expired"), ["payment.expired"])
    # Had the on-time money been the whole amount, it succeeds, the late part flagged.
    full = transition(PaymentState("requires_payment", DUE), Receipts(100, 0))[0]
    more = transition(full, Receipts(140, 0, late_arrival=True, late_money=True, late_seen=40))[0]
    done, events = transition(more, Receipts(0, 140, late_confirmed=40))
    assert (done.status, done.paid, done.late) == ("succeeded", "overpaid", True)
    assert events == ["payment.succeeded", "payment.overpaid"]
