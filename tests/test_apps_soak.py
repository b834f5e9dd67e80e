"""The soak of the app state machines: each one with the ``soak`` profile's example count
(``SUANPAN_SOAK_EXAMPLES``, default 10,000) from a random session seed, printed in the report
header and again after a failure (``tests/hypothesis_profiles.py``). A failure prints the
minimal sequence of steps and a ``@reproduce_failure`` blob; rerun it with
``python -m pytest -m slow tests/test_apps_soak.py -k NAME --hypothesis-seed=SEED``, then
keep the sequence as a regression test next to its machine.

    python -m pytest -m slow tests/test_apps_soak.py            # every machine
    python -m pytest -m slow tests/test_apps_soak.py -k cross   # one machine
"""

from __future__ import annotations

import pytest
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from tests.hypothesis_profiles import soak_settings
from tests.test_apps_cross_invariants import CrossAppMachine
from tests.test_assets_invariants import AssetsMachine
from tests.test_membership_invariants import MembershipMachine
from tests.test_payments_invariants import PaymentsMachine
from tests.test_scf_invariants import ScfMachine

pytestmark = pytest.mark.slow

MACHINES: dict[str, type[RuleBasedStateMachine]] = {
    "payments": PaymentsMachine,
    "scf": ScfMachine,
    "assets": AssetsMachine,
    "cross_app": CrossAppMachine,
    "membership": MembershipMachine,
}


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_soak(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    machine = MACHINES[name]
    sequences = [0]

    def counting_init(self: RuleBasedStateMachine) -> None:
        sequences[0] += 1
        machine.__init__(self)

    # A subclass that counts the sequences run (each starts with a fresh machine), so the
    # soak shows it spent its whole budget rather than stopping early.
    counted = type(f"Counted{machine.__name__}", (machine,), {"__init__": counting_init})
    # The same sequence length as in the default run; the soak adds sequences, not length.
    steps = machine.TestCase.settings.stateful_step_count
    settings = soak_settings(step_count=steps)
    run_state_machine_as_test(counted, settings=settings)
    with capsys.disabled():
        print(f"\n{name}: {sequences[0]} sequences of up to {steps} steps")
    assert sequences[0] >= settings.max_examples
