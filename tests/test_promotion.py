"""The promotion gate's invariants, for any standings: nothing with a non-finite or out-of-range number is promoted, a
champion whose numbers are not finite is replaced and the reason says so, a win beyond the noise is never mutual; and
`rollback` walks the champion history as a stack, refusing plainly where the kept history ends."""

import math
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings, strategies as st
from mlflow.exceptions import MlflowException

from pipelines.config import PipelineConfig
from pipelines.errors import UsageError
from pipelines.registry import champion, promotion
from pipelines.registry.promotion import HISTORY_KEPT, Standing, decide

MAX_MEMORISED = 0.2
NAN, INF = float("nan"), float("inf")

# Mostly plausible numbers, with the values that slip through comparisons: NaN, infinities, negatives, zero.
number = st.one_of(st.floats(0, 100), st.sampled_from([NAN, INF, -INF, -1.0, -1e-9, 0.0]))
share = st.one_of(st.floats(0, 1), st.sampled_from([NAN, INF, -0.5, 1.5]))
standing = st.builds(
    Standing, version=st.sampled_from(["1", "2", "3"]), fid=number, fid_std=number,
    extractor=st.sampled_from(["clf-a", "clf-b"]), num_images=st.sampled_from([-1, 0, 1, 1000]), memorised_share=share,
    yardstick=st.just("y"), dataset=st.just("d"),
)


def sound(s: Standing) -> bool:
    """The rule, written out again: every number finite, none negative, a sample at least, a share within [0, 1]."""
    return (all(math.isfinite(x) and x >= 0 for x in (s.fid, s.fid_std, s.memorised_share)) and s.num_images >= 1
            and s.memorised_share <= 1)


def good(version: str = "2", fid: float = 40.0, std: float = 0.1, memorised: float = 0.01) -> Standing:
    return Standing(version, fid, std, "clf-a", 1000, memorised, "y", "d")


@pytest.mark.parametrize(("challenger", "said"), [
    (good(memorised=NAN), "memorised_share = nan (expected a share from 0 to 1)"),
    (good(fid=NAN), "fid = nan (expected a finite number >= 0)"),
    (good(fid=-1.0), "fid = -1.0 (expected a finite number >= 0)"),
    (good(std=-0.1), "fid_std = -0.1 (expected a finite number >= 0)"),
    (good(std=INF), "fid_std = inf (expected a finite number >= 0)"),
], ids=["nan-share", "nan-fid", "negative-fid", "negative-std", "infinite-std"])
def test_a_challenger_with_a_number_out_of_range_is_never_promoted(challenger: Standing, said: str) -> None:
    """Neither as the first version nor against a champion: NaN > max is false, so a NaN share once passed the check."""
    first = decide(challenger, None, None, MAX_MEMORISED)
    assert first == (False, f"v2's scores cannot be compared: {said}")
    assert decide(challenger, good("1", fid=50.0), "1", MAX_MEMORISED) == first


def test_a_champion_tagged_nan_is_replaced_and_the_reason_says_so() -> None:
    """Its tags read back as they are ('nan'); a NaN loses every comparison, so it was kept against anything as 'not better'."""
    held = Standing.of_tags("1", {**good("1").tags(), "fid": "nan"})
    assert held is not None and math.isnan(held.fid)
    promoted, why = decide(good("2", fid=80.0), held, "1", MAX_MEMORISED)
    assert promoted and why == "champion v1's scores cannot be compared (fid = nan (expected a finite number >= 0)): v2, FID 80.00 ± 0.20, takes its place"


@settings(max_examples=300, deadline=None)
@given(challenger=standing, held=st.one_of(st.none(), standing), has_champion=st.booleans())
def test_the_gate_never_promotes_an_unsound_challenger_nor_keeps_an_unsound_champion_unsaid(
    challenger: Standing, held: Standing | None, has_champion: bool,
) -> None:
    champion_version = (held.version if held is not None else "1") if has_champion else None
    promoted, why = decide(challenger, held, champion_version, MAX_MEMORISED)
    if promoted:
        assert sound(challenger) and challenger.memorised_share <= MAX_MEMORISED, why
    if not sound(challenger):
        assert not promoted and why.startswith(f"v{challenger.version}'s scores cannot be compared: "), why
    elif champion_version is not None and held is not None and not sound(held) and challenger.memorised_share <= MAX_MEMORISED:
        assert promoted and why.startswith(f"champion v{held.version}'s scores cannot be compared ("), why
    if promoted and held is not None and champion_version is not None and sound(held):  # a win on the same yardstick, beyond the noise
        assert (held.extractor, held.num_images) == (challenger.extractor, challenger.num_images)
        assert held.fid - challenger.fid > promotion.Z * math.hypot(challenger.fid_std, held.fid_std) >= 0, why


@settings(max_examples=300, deadline=None)
@given(a=standing, b=standing)
def test_a_win_beyond_the_noise_is_never_mutual(a: Standing, b: Standing) -> None:
    assert not (decide(a, b, b.version, MAX_MEMORISED)[0] and decide(b, a, a.version, MAX_MEMORISED)[0])


class Registry:
    """One registered model held in memory, answering the calls `promote` and `rollback` make."""

    def __init__(self) -> None:
        self.alias: str | None = None
        self.tags: dict[str, str] = {}

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(version=version, run_id=None)

    def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
        if self.alias is None:
            raise MlflowException(f"{name}: no alias {alias}")
        return self.get_model_version(name, self.alias)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.alias = version

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(tags=dict(self.tags))

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        pass


PROMOTE, ROLLBACK = "promote", "rollback"
history = st.lists(st.one_of(st.tuples(st.just(PROMOTE), st.sampled_from("12345")), st.just((ROLLBACK, ""))), max_size=60)
FAR_BACK = [(PROMOTE, str(1 + i % 5)) for i in range(25)] + [(ROLLBACK, "")] * 15  # past the kept history


@settings(max_examples=200, deadline=None)
@given(first=st.sampled_from("12345"), rest=history)
@example(first="1", rest=FAR_BACK)
def test_rollback_walks_the_champion_history_as_a_stack(first: str, rest: list[tuple[str, str]]) -> None:
    """The model: a stack of champions (promote pushes, rollback pops) whose pushes are numbered. The history keeps the
    last HISTORY_KEPT moves, so rollback reaches the champion below the top when the move that pushed it is among them;
    otherwise it refuses, naming the cap once the history has been cut, never moving to another version."""
    registry, cfg = Registry(), PipelineConfig()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(champion, "connect", lambda _: registry)
        replay(cfg, registry, [(PROMOTE, first), *rest])


def replay(cfg: PipelineConfig, registry: Registry, moves: list[tuple[str, str]]) -> None:
    """Each move through `promote` or `rollback`, checked against the stack model."""
    stack: list[tuple[str, int]] = []  # (version, the number of the move that pushed it)
    done = 0
    for kind, version in moves:
        if kind == PROMOTE:
            champion.promote(cfg, "m", version, "by hand")
            stack.append((version, done))
        elif len(stack) >= 2 and stack[-2][1] >= done - HISTORY_KEPT:
            assert champion.rollback(cfg, "m", "back") == f"m: champion v{stack[-2][0]} (was v{stack[-1][0]})"
            stack.pop()
        else:
            kept = f"among the last {HISTORY_KEPT} moves of its champion history" if done > HISTORY_KEPT else "on record"
            with pytest.raises(UsageError, match=f"^m: no champion before v{stack[-1][0]} {kept}"):
                champion.rollback(cfg, "m", "back")
            continue
        done += 1
        assert registry.alias == stack[-1][0]
