"""Model-based test: random transfers, linked batches, pending/post/void, expiry and
replays against the real database and an in-memory model, with the ledger's invariants
checked after every step (design 0002, test plan)."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.errors import StablegateError
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer

_runs = itertools.count()
DP, DPO, CP, CPO = range(4)  # debits_pending, debits_posted, credits_pending, credits_posted
MAX_EXPIRY_ROUNDS = 2
SHORT_TIMEOUT_S = 1  # pendings that time out within a run (the expire rule waits for it)
DEBUG_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


@dataclass
class Acct:
    id: int
    asset: str
    flags: int
    bal: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def violates(self) -> str | None:
        if self.flags & 1 and self.bal[DPO] + self.bal[DP] > self.bal[CPO]:
            return "exceeds_credits"
        if self.flags & 2 and self.bal[CPO] + self.bal[CP] > self.bal[DPO]:
            return "exceeds_debits"
        return None


@dataclass
class Pending:
    amount: int
    debit: int
    credit: int
    expires: bool  # times out within the test (1 s); a long timeout is resolved like none
    resolved: bool = False


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database.connect(self.url, Settings())
        self.run = next(_runs)
        self.accounts: dict[int, Acct] = {}
        self.sent: dict[str, Transfer] = {}
        self.public_ids: dict[str, str] = {}  # what the ledger answered for each stored id
        self.pendings: dict[str, Pending] = {}
        self.serial = itertools.count()
        self.expiry_rounds = 0
        self._go(self._open_accounts())

    def _go(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open_accounts(self) -> None:
        async with self.db.session() as s:
            await ledger.define_asset(s, "USD", 2)
            await ledger.define_asset(s, "EUR", 2)
            stamp = f"{time.time_ns()}:{self.run}"
            for i, (asset, flags) in enumerate(
                [("USD", 0), ("USD", 1), ("USD", 2), ("USD", 0), ("EUR", 0), ("EUR", 1)]
            ):
                a = await ledger.open_account(s, f"sm:{stamp}:{i}", asset, "asset", flags=flags)
                self.accounts[a.id] = Acct(a.id, asset, flags)

    def teardown(self) -> None:
        self._go(self.db.dispose())
        self.loop.close()

    def _tid(self) -> str:
        return f"sm{self.run}-{time.time_ns()}-{next(self.serial)}"

    # ---- the model ------------------------------------------------------------------

    def _apply(self, t: Transfer, model: dict[int, Acct], pendings: dict[str, Pending]) -> str | None:
        """Apply `t` to the model copies; return the error it causes at once, if any."""
        if t.pending_id is None:
            assert t.debit_account is not None and t.credit_account is not None and t.amount is not None
            d, c = model[t.debit_account], model[t.credit_account]
            if d.asset != t.asset or c.asset != t.asset:
                return "asset_mismatch"
            column_d, column_c = (DP, CP) if t.kind == "pending" else (DPO, CPO)
            d.bal[column_d] += t.amount
            c.bal[column_c] += t.amount
            if t.kind == "pending":
                pendings[t.id] = Pending(t.amount, d.id, c.id, expires=t.timeout_s == SHORT_TIMEOUT_S)
        else:
            p = pendings[t.pending_id]
            if p.resolved:
                return "pending_transfer_already_resolved"
            amount = p.amount if t.amount is None or t.kind == "void" else t.amount
            if amount > p.amount:
                return "exceeds_pending_amount"
            d, c = model[p.debit], model[p.credit]
            d.bal[DP] -= p.amount
            c.bal[CP] -= p.amount
            if t.kind == "post":
                d.bal[DPO] += amount
                c.bal[CPO] += amount
            p.resolved = True
        return d.violates() or c.violates()

    def _expect(self, transfers: list[Transfer], model: dict[int, Acct], pendings: dict[str, Pending]) -> set[str]:
        """The error codes the ledger may answer ({} = success).

        A batch of plain transfers is one movement: asset checks per transfer, flags on the
        final balances (several accounts may break, any of them may be reported). A batch
        that resolves pending transfers is checked transfer by transfer."""
        if all(t.pending_id is None for t in transfers):
            for t in transfers:
                if self._apply(t, model, pendings) == "asset_mismatch":
                    return {"asset_mismatch"}
            return {v for a in model.values() if (v := a.violates())}
        for t in transfers:
            error = self._apply(t, model, pendings)
            if error:
                return {error}
        return set()

    def _submit(self, transfers: list[Transfer]) -> None:
        model = {k: Acct(v.id, v.asset, v.flags, list(v.bal)) for k, v in self.accounts.items()}
        pendings = {k: Pending(**vars(v)) for k, v in self.pendings.items()}
        expected = self._expect(transfers, model, pendings)
        try:
            results = self._go(self._create(transfers))
            got = None
        except StablegateError as exc:
            got = exc.code
        assert (got in expected) if expected else got is None, f"{transfers}: ledger {got}, model {expected}"
        if not expected:
            assert all(r.created for r in results)
            self.accounts, self.pendings = model, pendings
            self.sent.update({t.id: t for t in transfers})
            self.public_ids.update({r.id: r.public_id for r in results})

    async def _create(self, transfers: list[Transfer]) -> list[ledger.TransferResult]:
        async with self.db.session() as s:
            return await ledger.create_transfers(s, transfers)

    # ---- rules ------------------------------------------------------------------------

    def _new_transfer(self, data: st.DataObject) -> Transfer:
        asset = data.draw(st.sampled_from(["USD", "USD", "EUR"]))
        ids = sorted(k for k, a in self.accounts.items() if a.asset == asset)
        debit = data.draw(st.sampled_from(ids))
        credit = data.draw(st.sampled_from([i for i in ids if i != debit]))
        kind = data.draw(st.sampled_from(["posted", "posted", "pending"]))
        timeout = data.draw(st.sampled_from([None, None, SHORT_TIMEOUT_S, 3600])) if kind == "pending" else None
        if data.draw(st.integers(0, 19)) == 0:  # now and then, the wrong asset
            asset = "EUR" if asset == "USD" else "USD"
        amount = data.draw(st.integers(min_value=1, max_value=10**6))
        return Transfer(self._tid(), debit, credit, asset, amount, kind=kind, timeout_s=timeout, code=1)

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        self._submit([self._new_transfer(data)])

    @rule(data=st.data(), size=st.integers(min_value=2, max_value=4))
    def linked_batch(self, data: st.DataObject, size: int) -> None:
        self._submit([self._new_transfer(data) for _ in range(size)])

    @precondition(lambda self: any(not p.expires for p in self.pendings.values()))
    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        open_ones = sorted(k for k, p in self.pendings.items() if not p.expires and not p.resolved)
        candidates = (
            open_ones
            if open_ones and data.draw(st.integers(0, 4))
            else sorted(k for k, p in self.pendings.items() if not p.expires)
        )
        pending_id = data.draw(st.sampled_from(candidates))
        kind = data.draw(st.sampled_from(["post", "void"]))
        reserved = self.pendings[pending_id].amount
        amount = data.draw(st.one_of(st.none(), st.integers(1, reserved + 2))) if kind == "post" else None
        self._submit([Transfer(self._tid(), kind=kind, pending_id=pending_id, amount=amount)])

    @precondition(lambda self: any(not p.expires and not p.resolved for p in self.pendings.values()))
    @rule(data=st.data())
    def mixed_batch(self, data: st.DataObject) -> None:
        """New transfers around a post or void, one linked batch (checked transfer by transfer)."""
        open_ones = sorted(k for k, p in self.pendings.items() if not p.expires and not p.resolved)
        pending_id = data.draw(st.sampled_from(open_ones))
        kind = data.draw(st.sampled_from(["post", "void"]))
        resolution = Transfer(self._tid(), kind=kind, pending_id=pending_id)
        self._submit([self._new_transfer(data), resolution, self._new_transfer(data)])

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), size=st.integers(1, 3), tamper=st.booleans())
    def replay(self, data: st.DataObject, size: int, tamper: bool) -> None:
        """Stored transfers sent again, alone or as a batch (each of the posting function's
        paths): the originals come back, created=False, and nothing changes (the
        invariants check it). One field changed in one of them refuses the whole batch."""
        size = min(size, len(self.sent))
        ids = data.draw(st.lists(st.sampled_from(sorted(self.sent)), min_size=size, max_size=size, unique=True))
        originals = [self.sent[i] for i in ids]
        if not tamper:
            results = self._go(self._create(originals))
            assert [(r.id, r.public_id, r.created) for r in results] == [(i, self.public_ids[i], False) for i in ids]
            return
        victim = data.draw(st.integers(0, size - 1))
        batch = list(originals)
        batch[victim] = self._tampered(data, originals[victim])
        with pytest.raises(StablegateError) as err:
            self._go(self._create(batch))
        assert err.value.code == "transfer_exists_with_different_fields", (originals[victim], batch[victim])

    def _tampered(self, data: st.DataObject, t: Transfer) -> Transfer:
        """`t` with one field changed in a way the ledger must refuse as a replay."""
        fields = ["code", "metadata"]
        if t.pending_id is None:
            fields.append("amount")
        if t.kind == "pending":
            fields.append("timeout_s")
        name = data.draw(st.sampled_from(fields))
        if name == "code":
            return t._replace(code=t.code + 1)
        if name == "metadata":
            return t._replace(metadata={"tampered": True})
        if name == "amount":
            assert t.amount is not None
            return t._replace(amount=t.amount + 1)
        return t._replace(timeout_s=7200 if t.timeout_s is None else None)

    @precondition(
        lambda self: (
            self.expiry_rounds < MAX_EXPIRY_ROUNDS and any(p.expires and not p.resolved for p in self.pendings.values())
        )
    )
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        self.expiry_rounds += 1
        time.sleep(SHORT_TIMEOUT_S + 0.05)
        # Timed out, not yet expired by the job: posting or voiding it is refused.
        timed_out = sorted(k for k, p in self.pendings.items() if p.expires and not p.resolved)
        late = Transfer(self._tid(), kind=data.draw(st.sampled_from(["post", "void"])), pending_id=timed_out[0])
        with pytest.raises(StablegateError) as err:
            self._go(self._create([late]))
        assert err.value.code == "pending_transfer_expired"
        self._go(self._expire())
        for p in self.pendings.values():
            if p.expires and not p.resolved:
                self.accounts[p.debit].bal[DP] -= p.amount
                self.accounts[p.credit].bal[CP] -= p.amount
                p.resolved = True

    async def _expire(self) -> None:
        async with self.db.session() as s:
            await ledger.expire_pending(s)

    # ---- invariants ---------------------------------------------------------------------

    @invariant()
    def database_matches_model_and_journal(self) -> None:
        self._go(self._check())

    async def _check(self) -> None:
        sums: dict[str, list[int]] = {}
        async with self.db.session() as s:
            for acct in self.accounts.values():
                b = await ledger.balance(s, acct.id)
                stored = [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted]
                assert stored == acct.bal, f"account {acct.id}: db {stored} != model {acct.bal}"
                assert await ledger.journal_balance(s, acct.id) == b, "balance equals the sum of its journal"
                assert acct.violates() is None
                total = sums.setdefault(acct.asset, [0, 0, 0, 0])
                for i in range(4):
                    total[i] += stored[i]
        for asset, (dp, dpo, cp, cpo) in sums.items():
            assert dpo == cpo and dp == cp, f"{asset}: debits != credits"


def test_ledger_against_a_model(database_url: str) -> None:
    LedgerMachine.url = database_url
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=DEBUG_PHASES,
        ),
    )
