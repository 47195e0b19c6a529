"""Ledger errors: every refusal has a stable code; SQLSTATEs of class LG come from the
posting functions and triggers of migrations 0003, 0004 and 0016."""

from __future__ import annotations

from stablegate.errors import Conflict, InvalidRequest, NotFound, StablegateError


class LedgerError(InvalidRequest):
    type = "ledger_error"


class AccountNotFound(NotFound):
    type = "ledger_error"
    code = "account_not_found"


class AssetMismatch(LedgerError):
    code = "asset_mismatch"
    default_param = "asset"


class AccountClosed(LedgerError):
    code = "account_closed"


class AccountHasPending(Conflict):
    type = "ledger_error"
    code = "account_has_pending_transfers"


class ExceedsCredits(LedgerError):
    code = "exceeds_credits"
    default_param = "amount"


class ExceedsDebits(LedgerError):
    code = "exceeds_debits"
    default_param = "amount"


class TransferExists(Conflict):
    type = "ledger_error"
    code = "transfer_exists_with_different_fields"
    default_param = "id"


class PendingNotFound(LedgerError):
    code = "pending_transfer_not_found"
    default_param = "pending_id"


class PendingAlreadyResolved(Conflict):
    type = "ledger_error"
    code = "pending_transfer_already_resolved"
    default_param = "pending_id"


class PendingExpired(LedgerError):
    code = "pending_transfer_expired"
    default_param = "pending_id"


class PendingNotExpired(LedgerError):
    code = "pending_transfer_not_expired"
    default_param = "pending_id"


class ExceedsPendingAmount(LedgerError):
    code = "exceeds_pending_amount"
    default_param = "amount"


class AppendOnly(StablegateError):
    status_code = 500
    type = "api_error"
    code = "journal_append_only"


class AccountPermanent(StablegateError):
    status_code = 500
    type = "api_error"
    code = "account_permanent"


# SQLSTATE raised by migrations 0003, 0004 and 0016 -> error class
BY_SQLSTATE: dict[str, type[StablegateError]] = {
    "LG001": AppendOnly,
    "LG010": AccountNotFound,
    "LG011": AssetMismatch,
    "LG012": AccountClosed,
    "LG013": AccountPermanent,
    "LG014": AccountHasPending,
    "LG020": TransferExists,
    "LG021": PendingNotFound,
    "LG022": PendingAlreadyResolved,
    "LG023": PendingExpired,
    "LG024": ExceedsPendingAmount,
    "LG025": PendingNotExpired,
}
# constraint name -> error class, for violations the database itself detects
BY_CONSTRAINT: dict[str, type[StablegateError]] = {
    "debits_must_not_exceed_credits": ExceedsCredits,
    "credits_must_not_exceed_debits": ExceedsDebits,
    "ux_ledger_transfers_resolution": PendingAlreadyResolved,
    "distinct_accounts": LedgerError,
}
