"""The adversary: byzantine validators that see all traffic and craft any message.

What these show: the adversary is reproducible from its seed; over a few seeds it makes every
kind of move and drives honest replicas into most drop reasons; and 200 seeds of it, over
n = 4, 5, 7, 10 with 1..f byzantine validators and the network's own faults, break neither
safety nor liveness (checked after it stops).
"""

from __future__ import annotations

import pytest

from consensus.messages import MessageError, decode_message
from sims.adversary import MOVES, STEP_MOVES, Adversary, AdversaryParameters, Move
from sims.config import SimConfig
from sims.simulation import Simulation, run_simulation
from sims.sweep import ADVERSARY_SHAPES, run_sweep, sweep_config

ADVERSARY_SEEDS = 200


def test_same_seed_same_attack_and_trace() -> None:
    config = SimConfig(seed=7, validators=4, byzantine=1, blocks=3, adversary=True)
    first = run_simulation(config)
    second = run_simulation(config)
    assert first.trace_digest == second.trace_digest
    assert first.moves == second.moves
    assert sum(first.moves.values()) > 0
    other = run_simulation(SimConfig(seed=8, validators=4, byzantine=1, blocks=3, adversary=True))
    assert other.trace_digest != first.trace_digest
    assert "--adversary" in config.command()


def test_the_adversary_sees_every_message_and_knows_where_each_honest_replica_is() -> None:
    simulation = Simulation(SimConfig(seed=3, validators=7, byzantine=2, blocks=3, adversary=True))
    adversary = simulation.adversary
    assert isinstance(adversary, Adversary)
    seen: list[bytes] = []
    observe = adversary.observe

    def spy(sender: int, data: bytes) -> None:
        seen.append(data)
        observe(sender, data)

    adversary.observe = spy  # type: ignore[method-assign]
    result = simulation.run()
    assert result.ok, result.violations
    # Every send reached the adversary before the network decided its fate.
    assert len(seen) >= result.messages_sent // 7
    honest = [v for v in range(7) if v not in simulation.byzantine_indices]
    assert all(v in adversary._position for v in honest)


def test_crafted_messages_use_the_real_encoders() -> None:
    """Everything the adversary sends decodes with the real decoder, except its garbage."""
    simulation = Simulation(SimConfig(seed=11, validators=4, byzantine=1, blocks=3, adversary=True))
    adversary = simulation.adversary
    assert adversary is not None
    sent: list[bytes] = []
    transport = adversary._transport

    def spy(source: int, destination: int, data: bytes) -> None:
        sent.append(data)
        transport(source, destination, data)

    adversary._transport = spy
    result = simulation.run()
    undecodable = 0
    for data in sent:
        try:
            decode_message(data)
        except MessageError:
            undecodable += 1
    assert sent
    assert undecodable <= result.moves.get(str(Move.GARBAGE), 0) * 4


def test_a_handful_of_seeds_make_every_move_and_most_drops_fire() -> None:
    runs = [
        run_simulation(SimConfig(seed=seed, validators=4, byzantine=1, blocks=4, adversary=True))
        for seed in range(6)
    ]
    moves: set[str] = set()
    drops: set[str] = set()
    for result in runs:
        moves.update(name for name, count in result.moves.items() if count)
        drops.update(name for name, count in result.drops.items() if count)
    assert set(map(str, STEP_MOVES)) <= moves
    # Drops the adversary alone provokes at honest replicas (the rest need a replica bug or
    # an honest replica's own mistakes; tests/test_consensus_drop_reasons.py covers all).
    for reason in (
        "malformed",
        "not_validator",
        "bad_signature",
        "stale",
        "too_far_ahead",
        "buffer_full",
        "duplicate",
        "not_primary",
        "invalid_view_change",
        "invalid_new_view",
        "invalid_certificate",
    ):
        assert reason in drops, (reason, sorted(drops))


def test_parameters_are_a_swarm_and_a_focus_pins_the_moves() -> None:
    import random

    drawn = [AdversaryParameters.draw(random.Random(seed)) for seed in range(40)]
    assert len({p.weights for p in drawn}) > 30
    assert all(p.weights for p in drawn)
    focused = AdversaryParameters.draw(random.Random(1), focus=(Move.REPLAY,))
    assert [m for m, _ in focused.weights] == [Move.REPLAY]
    assert focused.opportunism_percent >= 90
    assert set(MOVES) >= set(STEP_MOVES)


@pytest.fixture(scope="module")
def adversary_sweep() -> dict[str, object]:
    """200 seeds under the adversary: n in 4, 5, 7, 10, 1..f byzantine, 3 heights each."""
    configs = [sweep_config(seed, blocks=3, adversary=True) for seed in range(ADVERSARY_SEEDS)]
    assert {c.validators for c in configs} == set(ADVERSARY_SHAPES)
    assert all(1 <= c.byzantine <= (c.validators - 1) // 3 for c in configs)
    return run_sweep(configs, jobs=2).describe()


def test_two_hundred_adversary_seeds_are_safe_and_live(adversary_sweep: dict[str, object]) -> None:
    assert adversary_sweep["adversary_seeds"] == ADVERSARY_SEEDS
    assert adversary_sweep["failed"] == 0, adversary_sweep["failures"]
    assert adversary_sweep["safety_failed"] == 0
    assert adversary_sweep["liveness_failed"] == 0


def test_the_adversary_sweep_reports_its_coverage(adversary_sweep: dict[str, object]) -> None:
    coverage = adversary_sweep["coverage"]
    assert isinstance(coverage, dict)
    moves = coverage["moves"]
    drops = coverage["drop_reasons"]
    assert set(moves) == {str(m) for m in MOVES}
    assert all(moves[str(move)] > 0 for move in STEP_MOVES)
    assert len(drops) >= 16
    assert sum(1 for count in drops.values() if count) >= 12
    # Nodes the adversary held back caught up with hints, each checked against their state.
    assert int(str(adversary_sweep["sync_hints_checked"])) > 0
