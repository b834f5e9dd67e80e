"""The throughput benchmark's workload: funded payment accounts and pre-signed transfers.

Every validator's bank (``bank<i>``, as ``node.testnet.testnet`` names them) gets
``accounts_per_bank`` customer accounts, each a member identity (role ``customer``) with a
balance in one currency, ``BUX`` (issued by ``bank0``). Keys are derived from the seed, so a
run is reproducible.

A transfer moves a small amount from one account to another account of another bank, with the
fields a bank payment carries (end-to-end id, purpose, originator, beneficiary): about 330
encoded bytes. Nonces are strictly sequential per sender, so every account submits to one node
only (the node its bank runs), and ``node_streams`` interleaves each node's accounts round-robin
so a stream submitted in order keeps every sender's nonces in order.

Signing happens before a run (``sign_stream``, spread over processes); it is not part of the
measured path.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from apps.transaction import sign_transaction
from consensus.codec import encode
from consensus.crypto import PrivateKey, hash_bytes
from node.jsonvalue import JsonType

__all__ = [
    "BENCH_CHAIN_ID",
    "CATCHUP_ACCOUNTS_PER_BANK",
    "CURRENCY",
    "BenchAccounts",
    "bench_accounts",
    "sign_streams",
    "transfer",
]

CURRENCY: Final = "BUX"
# The chain id of every benchmark chain.
BENCH_CHAIN_ID: Final = "suanpan-bench"
# Accounts per bank of the catch-up benchmark (and the execution benchmark's ``accounts`` mix).
CATCHUP_ACCOUNTS_PER_BANK: Final = 50
# Each account's genesis balance: far more than any run spends (amounts are 1..97 minor units).
ACCOUNT_FUNDS: Final = 10**12
_KEY_TAG: Final = "suanpan/bench-account/v1"


def _account_key(seed: int, bank: int, index: int) -> PrivateKey:
    return PrivateKey(hash_bytes(encode((_KEY_TAG, seed, bank, index))))


@dataclass(frozen=True, slots=True)
class BenchAccounts:
    """The funded accounts of a benchmark chain: ``seeds[bank][i]`` is the seed of account i
    of bank ``bank`` (pass it to ``PrivateKey``), ``public_keys`` likewise."""

    seed: int
    seeds: tuple[tuple[bytes, ...], ...]
    public_keys: tuple[tuple[bytes, ...], ...]

    @property
    def banks(self) -> int:
        """Number of banks (one per validator)."""
        return len(self.seeds)

    def app_state(self) -> dict[str, JsonType]:
        """Genesis sections for ``membership`` and ``payments`` (``node.jsonvalue`` JSON)."""
        institutions: list[JsonType] = [
            {"id": f"bank{bank}", "name": f"Bank {bank}", "kind": "bank", "jurisdiction": "SG"}
            for bank in range(self.banks)
        ]
        identities: list[JsonType] = []
        balances: list[JsonType] = []
        for bank, keys in enumerate(self.public_keys):
            for public_key in keys:
                identities.append(
                    {
                        "public_key": public_key.hex(),
                        "institution": f"bank{bank}",
                        "roles": ["customer"],
                    }
                )
                balances.append(
                    {
                        "account": {"$bytes": public_key.hex()},
                        "currency": CURRENCY,
                        "amount": ACCOUNT_FUNDS,
                    }
                )
        return {
            "membership": {"institutions": institutions, "identities": identities},
            "payments": {
                "currencies": [{"code": CURRENCY, "digits": 2, "issuer": "bank0"}],
                "balances": balances,
            },
        }


def bench_accounts(banks: int, accounts_per_bank: int, seed: int = 0) -> BenchAccounts:
    """``accounts_per_bank`` funded accounts for each of ``banks`` banks."""
    if banks < 1 or accounts_per_bank < 1:
        raise ValueError("a benchmark needs at least one bank and one account per bank")
    seeds = tuple(
        tuple(
            hash_bytes(encode((_KEY_TAG, seed, bank, index))) for index in range(accounts_per_bank)
        )
        for bank in range(banks)
    )
    public_keys = tuple(tuple(PrivateKey(item).public_key for item in row) for row in seeds)
    return BenchAccounts(seed, seeds, public_keys)


def transfer(
    key: PrivateKey, chain_id: str, to: bytes, nonce: int, amount: int, reference: str
) -> bytes:
    """One signed ``payments.transfer`` of ``amount`` minor units of ``CURRENCY``."""
    return sign_transaction(
        key,
        chain_id=chain_id,
        app="payments",
        operation="transfer",
        arguments={
            "to": to,
            "currency": CURRENCY,
            "amount": amount,
            "end_to_end_id": reference,
            "purpose": "supplier invoice",
            "originator": {"name": "bench payer", "country": "SG"},
            "beneficiary": {"name": "bench payee", "country": "HK"},
        },
        nonce=nonce,
    ).encoded


@dataclass(frozen=True, slots=True)
class _StreamJob:
    chain_id: str
    bank: int
    seeds: tuple[bytes, ...]
    payees: tuple[bytes, ...]
    first_nonces: tuple[int, ...]
    first_round: int
    rounds: int


def _sign_job(job: _StreamJob) -> list[bytes]:
    keys = [PrivateKey(item) for item in job.seeds]
    stream: list[bytes] = []
    for round_index in range(job.first_round, job.first_round + job.rounds):
        for index, key in enumerate(keys):
            nonce = job.first_nonces[index] + round_index
            payee = job.payees[(index + nonce) % len(job.payees)]
            reference = f"bench-{job.bank}-{index}-{nonce}"
            amount = 1 + (index + nonce) % 97
            stream.append(transfer(key, job.chain_id, payee, nonce, amount, reference))
    return stream


def sign_streams(
    accounts: BenchAccounts,
    chain_id: str,
    rounds: int,
    *,
    first_nonces: Sequence[Sequence[int]] | None = None,
    processes: int = 0,
) -> list[list[bytes]]:
    """For every bank, ``rounds`` transfers from each of its accounts, round-robin over the
    accounts (so each sender's nonces ascend), account i's starting at ``first_nonces[bank][i]``
    (0 by default). Payees are accounts of the next bank (another account of the same bank when
    there is only one). ``processes`` > 1 signs in that many worker processes."""
    jobs: list[_StreamJob] = []
    owners: list[int] = []
    for bank in range(accounts.banks):
        payees = accounts.public_keys[(bank + 1) % accounts.banks]
        if accounts.banks == 1:
            payees = payees[1:] + payees[:1]
        nonces = (
            tuple(first_nonces[bank])
            if first_nonces is not None
            else (0,) * len(accounts.seeds[bank])
        )
        whole = _StreamJob(chain_id, bank, accounts.seeds[bank], payees, nonces, 0, rounds)
        for piece in _split(whole, processes):
            jobs.append(piece)
            owners.append(bank)
    parts: list[list[bytes]]
    if processes > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.map(_sign_job, jobs)
    else:
        parts = [_sign_job(job) for job in jobs]
    streams: list[list[bytes]] = [[] for _ in range(accounts.banks)]
    for bank, part in zip(owners, parts, strict=True):
        streams[bank].extend(part)
    return streams


def _split(job: _StreamJob, processes: int) -> Sequence[_StreamJob]:
    """Split by rounds so the concatenated parts keep the round-robin order."""
    if processes <= 1 or job.rounds < 2 * processes:
        return [job]
    step = -(-job.rounds // processes)
    return [
        _StreamJob(
            job.chain_id,
            job.bank,
            job.seeds,
            job.payees,
            job.first_nonces,
            start,
            min(step, job.first_round + job.rounds - start),
        )
        for start in range(job.first_round, job.first_round + job.rounds, step)
    ]
