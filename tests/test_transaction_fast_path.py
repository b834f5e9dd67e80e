"""``Transaction.decode`` keeps the wire bytes instead of encoding them again, and ``body()`` is a
slice of them: both must give exactly what encoding the fields gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.transaction import TX_LIMITS, TX_VERSION, Transaction, sign_transaction
from consensus.codec import INT_MAX, INT_MIN, encode
from consensus.crypto import PrivateKey

KEY = PrivateKey(b"\x09" * 32)
CHAIN = "suanpan-test"

argument_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.binary(max_size=40)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    arguments=st.dictionaries(st.text(max_size=12), argument_values, max_size=8),
    nonce=st.integers(0, 2**63 - 1),
    operation=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
def test_decoded_transaction_equals_the_encoded_fields(
    arguments: dict[str, object], nonce: int, operation: str
) -> None:
    signed = sign_transaction(
        KEY,
        chain_id=CHAIN,
        app="payments",
        operation=operation,
        arguments=arguments,  # type: ignore[arg-type]
        nonce=nonce,
    )
    decoded = Transaction.decode(signed.encoded, chain_id=CHAIN)
    rebuilt = Transaction.build(
        decoded.chain_id,
        decoded.app,
        decoded.operation,
        decoded.arguments,
        decoded.sender,
        decoded.nonce,
        decoded.signature,
    )
    assert decoded == rebuilt  # (signed may hold lists where decoding gives tuples)
    assert decoded.encoded == rebuilt.encoded == signed.encoded
    assert decoded.hash == rebuilt.hash == signed.hash
    fields = (decoded.chain_id, decoded.app, decoded.operation, dict(decoded.arguments))
    body = encode((TX_VERSION, *fields, decoded.sender, decoded.nonce), TX_LIMITS)
    assert decoded.body() == rebuilt.body() == signed.body() == body
    assert decoded.signature_valid()
