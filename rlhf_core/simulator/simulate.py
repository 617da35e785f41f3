"""Simulated annotators: scripted judges that label pairs through the same storage path as people.

Each simulated annotator is a real user (`sim-1` ... `sim-K`, or with a crowd spec `sim-<kind>-<i>`) that
asks `next_pair_for` for a pair, sees it with sides randomised exactly as a person would, picks by its kind
(`rlhf_core.simulator.crowd`: honest ones pick the side a gold preference, `rlhf_core.simulator.gold`, scores higher)
and records the pick with `record_judgment`. So leases, k-overlap, priorities and side randomisation are
exercised end to end, and the loop can run without people.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from rlhf_core.simulator.crowd import CrowdSpecError, GoldView, crowd_members, crowd_pick
from rlhf_core.simulator.gold import GoldScore, get_gold
from storage import (
    Database,
    JudgmentError,
    ServedPair,
    choice_from_screen,
    create_annotator,
    get_annotator,
    next_pair_for,
    pair_kinds,
    record_judgment,
    skip_pair,
)

SIM_USER_PREFIX = "sim-"


class SimulationError(RuntimeError):
    """The simulation cannot start (bad arguments, a disabled simulated user); the message says why."""


@dataclass
class SimulationResult:
    """What a simulation run recorded.

    judgments: judgments recorded in this run; per_annotator: of those, by username; kinds: each
    username's annotator kind; ties: how many were ties; flipped: labels against a decisive gold (by
    `noise`, or by the annotator's kind); skipped: pairs passed on (kind not in `kinds`, or the lease lost
    before the judgment was recorded); stopped: "target reached" or "no pairs left".
    """

    judgments: int = 0
    per_annotator: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    ties: int = 0
    flipped: int = 0
    skipped: int = 0
    stopped: str = "target reached"


def gold_view(gold: GoldScore, served: ServedPair) -> GoldView:
    """The gold preference's scores of the served pair's left and right response."""
    return GoldView(left=gold(served.prompt_messages, served.left_text),
                    right=gold(served.prompt_messages, served.right_text))


def ensure_sim_annotators(db: Database, count: int | Sequence[str]) -> list[tuple[int, str]]:
    """`(id, username)` of users sim-1..sim-`count` (or of the names given), creating the missing ones with
    a random password."""
    names = [f"{SIM_USER_PREFIX}{i}" for i in range(1, count + 1)] if isinstance(count, int) else list(count)
    users = []
    for name in names:
        user = get_annotator(db, name)
        if user is None:
            user = create_annotator(db, name, secrets.token_urlsafe(24), role="annotator")
        elif not user.active:
            raise SimulationError(f"simulated annotator {name!r} is disabled; enable it or use fewer annotators")
        users.append((user.id, name))
    return users


def simulate_annotators(
    db: Database, *, annotators: int = 3, judgments: int, gold: str | GoldScore, noise: float = 0.0, seed: int = 0,
    lease_seconds: int = 300, kinds: Sequence[str] | None = None, progress: bool = True,
    gold_options: dict[str, object] | None = None, control_rate: float = 0.0, crowd: str | None = None,
) -> SimulationResult:
    """Have `annotators` simulated users (honest, sim-1..sim-K), or the `crowd` (a spec such as
    "honest:3,random:1,left:1", users sim-<kind>-<i>; `annotators` is then ignored), record up to
    `judgments` judgments, taking turns round-robin.

    gold: a name from `rlhf_core.registry.GOLDS` (built with `gold_options`) or a score function.
    noise: probability in [0, 1] that a decisive label is inverted (ties stay ties), like a careless rater
        (honest, lazy and adversarial annotators; see `rlhf_core.registry.CROWD_KINDS`).
    kinds: pair kinds to judge; a served pair of another kind is skipped (for that simulated user only),
        except control pairs, which are always judged. None judges whatever is served, as a person would
        (including policy-vs-base pairs).
    control_rate: share of serves that are control pairs (`labeling.control_rate`), judged by the
        annotator's kind like any other pair; 0 serves none.
    Stops when `judgments` are recorded or no simulated annotator is served a pair. Deterministic in
    `seed` for a given database state.
    """
    try:
        members = dict(crowd_members(crowd)) if crowd is not None else {}
    except CrowdSpecError as exc:
        raise SimulationError(str(exc)) from None
    if not members and annotators < 1:
        raise SimulationError(f"need at least one simulated annotator, got {annotators}")
    if judgments < 0:
        raise SimulationError(f"judgments must be zero or more, got {judgments}")
    if not 0.0 <= noise <= 1.0:
        raise SimulationError(f"noise is a probability in [0, 1], got {noise}")
    score = get_gold(gold, **(gold_options or {})) if isinstance(gold, str) else gold
    users = ensure_sim_annotators(db, list(members) or annotators)
    # Separate streams, so the side shuffling does not change when noise does.
    side_rng, noise_rng = random.Random(seed), random.Random(f"{seed}-noise")
    result = SimulationResult(per_annotator={name: 0 for _, name in users},
                              kinds={name: members.get(name, "honest") for _, name in users})
    rotation = list(users)
    turn = 0
    with tqdm(total=judgments, desc="simulated judgments", unit="judgment", disable=not progress) as bar:
        while result.judgments < judgments:
            if not rotation:
                result.stopped = "no pairs left"
                break
            turn %= len(rotation)
            user_id, name = rotation[turn]
            served = next_pair_for(db, user_id, lease_seconds=lease_seconds, rng=side_rng, control_rate=control_rate)
            if served is None:
                rotation.pop(turn)  # nothing more for this user; the others keep their turns
                continue
            if kinds is not None and pair_kinds(db, [served.pair_id]).get(served.pair_id) not in (*kinds, "control"):
                skip_pair(db, pair_id=served.pair_id, annotator_id=user_id)
                result.skipped += 1
                continue
            view = gold_view(score, served)
            pick = crowd_pick(result.kinds[name])(view, noise_rng, noise)
            flipped = view.preferred != "tie" and pick == {"left": "right", "right": "left"}[view.preferred]
            try:
                _, created = record_judgment(db, pair_id=served.pair_id, annotator_id=user_id,
                                             choice=choice_from_screen(pick, served.left_side))
            except JudgmentError:
                # The lease expired and its slot went to someone else mid-run: pass on the pair, as a person would.
                skip_pair(db, pair_id=served.pair_id, annotator_id=user_id)
                result.skipped += 1
                created = False
            if created:
                result.judgments += 1
                result.per_annotator[name] += 1
                result.ties += pick == "tie"
                result.flipped += flipped
                bar.update(1)
            turn += 1
    return result
