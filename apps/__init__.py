"""Deterministic application plugins and the interface they implement."""

from apps.base import App, AppError, AppState, BlockContext, Event, ReadState, TxContext
from apps.transaction import Transaction, TransactionError, sign_transaction

__all__ = [
    "App",
    "AppError",
    "AppState",
    "BlockContext",
    "Event",
    "ReadState",
    "Transaction",
    "TransactionError",
    "TxContext",
    "sign_transaction",
]
