"""A small in-memory chain for tests: founding banks, the real host, blocks applied in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from apps.base import App, BlockContext
from apps.host import AppHost, BlockResult
from apps.membership import MembershipApp
from apps.schema import Amounts, Argument, Identifier, Party, Record, Records, Strings
from apps.state import MemoryBackend
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from consensus.types import ValidatorSet

CHAIN = "suanpan-test"


def key(label: str) -> PrivateKey:
    """A deterministic key per label."""
    return PrivateKey(label.encode().ljust(32, b".")[:32])


def identity(label: str, institution: str, *roles: str) -> dict[str, Value]:
    """A genesis/proposal identity entry for ``key(label)``."""
    return {"public_key": key(label).public_key, "institution": institution, "roles": list(roles)}


def genesis_config(banks: Sequence[str] = ("bank_a", "bank_b", "bank_c", "bank_d")) -> Value:
    """Membership genesis: one bank per name (jurisdictions cycle SG, HK, GB), one operator key
    each (``key(name)``), a regulator in SG (``key("regulator_sg")``)."""
    jurisdictions = ("SG", "HK", "GB")
    institutions: list[Value] = [
        {
            "id": name,
            "name": name.replace("_", " ").title(),
            "kind": "bank",
            "jurisdiction": jurisdictions[i % 3],
        }
        for i, name in enumerate(banks)
    ]
    institutions.append(
        {"id": "mas", "name": "Monetary Authority", "kind": "regulator", "jurisdiction": "SG"}
    )
    identities: list[Value] = [identity(name, name, "bank") for name in banks]
    identities.append(identity("regulator_sg", "mas", "regulator"))
    return {"institutions": institutions, "identities": identities}


@dataclass
class Chain:
    """The real host over a ``MemoryBackend``; ``run`` executes and commits one block."""

    host: AppHost
    backend: MemoryBackend
    nonces: dict[bytes, int] = field(default_factory=dict)
    time_ms: int = 1_700_000_000_000

    @classmethod
    def start(
        cls,
        extra_apps: Sequence[App] = (),
        app_genesis: Mapping[str, Value] | None = None,
        validators: ValidatorSet | None = None,
    ) -> Chain:
        """A chain at height 0; ``validators`` starts the on-chain validator registry."""
        backend = MemoryBackend()
        host = AppHost([MembershipApp(), *extra_apps], backend, chain_id=CHAIN)
        genesis = {"membership": genesis_config()} if app_genesis is None else app_genesis
        writes, app_hash = host.init_genesis(genesis, validators=validators)
        backend.apply(writes)
        host.committed(0, app_hash)
        return cls(host, backend)

    def sign(
        self,
        signer: PrivateKey,
        app: str,
        operation: str,
        arguments: Mapping[str, Value],
        *,
        nonce: int | None = None,
    ) -> Transaction:
        """Sign with the signer's next nonce (tracked locally) unless ``nonce`` is given."""
        if nonce is None:
            nonce = self.nonces.get(signer.public_key, 0)
            self.nonces[signer.public_key] = nonce + 1
        return sign_transaction(
            signer, chain_id=CHAIN, app=app, operation=operation, arguments=arguments, nonce=nonce
        )

    def context(self) -> BlockContext:
        height = self.host.height + 1
        return BlockContext(
            height=height,
            time_ms=self.time_ms + 1000 * height,
            proposer=key("bank_a").public_key,
            chain_id=CHAIN,
        )

    def run(self, transactions: Sequence[Transaction | bytes]) -> BlockResult:
        """Execute one block with these transactions and commit it."""
        raw = [tx if isinstance(tx, bytes) else tx.encoded for tx in transactions]
        result = self.host.execute_block(self.context(), raw)
        self.backend.apply(result.writes)
        self.host.committed(result.height, result.app_hash, result.writes)
        return result

    def run_one(self, tx: Transaction) -> Value:
        """Execute a block with one transaction; return its result or raise on rejection."""
        receipt = self.run([tx]).receipts[0]
        if not receipt.ok:
            raise AssertionError(f"rejected: {receipt.code}: {receipt.message}")
        return receipt.result


# Argument values of every kind the codec carries: names and texts the argument types accept,
# among others they refuse, nested in tuples, lists and maps.
_NAMES = st.sampled_from(["name", "country", "x1", "bad name", ""])
ARGUMENT_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | _NAMES | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.lists(inner, max_size=3)
        | st.dictionaries(_NAMES, inner, max_size=3)
    ),
    max_leaves=8,
)


def vandalise(value: object) -> None:
    """Change every map and list in ``value`` (and in the tuples in it): a careless app."""
    if isinstance(value, dict):
        for item in list(value.values()):
            vandalise(item)
        value["vandalised"] = True
    elif isinstance(value, list):
        for item in value:
            vandalise(item)
        value.append("vandalised")
    elif isinstance(value, tuple):
        for item in value:
            vandalise(item)


# Arguments of every shape a schema parses into maps and tuples, for the tests of what apps
# are handed (``shaped_arguments`` is a sample of them).
NAME_FIELDS = (Argument("name", Identifier(), "a name"),)
ENTRY = Record(NAME_FIELDS)
SHAPED_ARGUMENTS = (
    Argument("party", Party(), "details"),
    Argument("entry", ENTRY, "one record"),
    Argument("entries", Records(NAME_FIELDS, items_max=4), "records"),
    Argument("tags", Strings(items_max=4), "tags"),
    Argument("amounts", Amounts(items_max=4), "amounts"),
)


def shaped_arguments(n: int) -> dict[str, Value]:
    """Sample ``n`` of values for ``SHAPED_ARGUMENTS``."""
    return {
        "party": {"name": f"p{n}", "country": "CH"},
        "entry": {"name": f"e{n}"},
        "entries": ({"name": f"a{n}"}, {"name": f"b{n}"}),
        "tags": ("z", "y", "z"),
        "amounts": (n + 1, 2),
    }
