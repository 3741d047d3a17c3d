"""The promotion gate: `champion` moves only when a challenger beats it by more than the noise.

Each registered version carries its FID, the FID's bootstrap spread, the sample count, the feature extractor, the
yardstick (extractor, reference data, sample count, seed) and its memorised share as tags. A challenger becomes champion
when its FID is lower than the champion's by more than the noise (the difference's 95 % interval, ± 1.96 × the root of
the two bootstrap variances, lies above zero), both measured on the same yardstick, and it does not hand back training
images. A challenger whose numbers are not finite (or out of range) is never promoted; a champion whose numbers are not
finite holds no claim: a sound challenger takes its place, and the reason says so. A champion measured on other data than the
challenger is measured again on the challenger's yardstick before the gate decides (pipelines/stages/register.py: head
to head). Every move of `champion` (the gate's or a person's) is appended to the model's `champion_history` tag, which
`rollback` reads.
"""

import getpass
import json
import math
import os
import time
from dataclasses import dataclass

from pipelines.errors import UsageError

Z = 1.96  # half-width of a 95 % normal interval, in bootstrap standard deviations
HISTORY_TAG, HISTORY_KEPT = "champion_history", 20

# What each number of a standing must be for the gate to compare it: (field, the rule in words, the test). NaN fails
# every comparison, so each test is written to be false for it.
RULES = (
    ("fid", "a finite number >= 0", lambda x: math.isfinite(x) and x >= 0),
    ("fid_std", "a finite number >= 0", lambda x: math.isfinite(x) and x >= 0),
    ("num_images", "a whole number >= 1", lambda n: n >= 1),
    ("memorised_share", "a share from 0 to 1", lambda x: 0 <= x <= 1),
)


@dataclass(frozen=True)
class Standing:
    """What the gate reads of one version."""

    version: str
    fid: float
    fid_std: float
    extractor: str
    num_images: int
    memorised_share: float
    yardstick: str = ""  # the yardstick's key ('' for a version measured before yardsticks were kept)
    dataset: str = ""  # the fingerprint of the data the FID's reference is (the version's own training data, or re-scored on another's)

    def unsound(self) -> list[str]:
        """Each number the gate cannot compare, as 'key = value (expected rule)'; empty when all are sound."""
        return [f"{key} = {getattr(self, key)} (expected {rule})" for key, rule, sound in RULES if not sound(getattr(self, key))]

    def tags(self) -> dict[str, str]:
        return {"fid": str(self.fid), "fid_std": str(self.fid_std), "feature_extractor": self.extractor,
                "num_images": str(self.num_images), "memorised_share": str(self.memorised_share), "yardstick": self.yardstick}

    @classmethod
    def of_report(cls, version: str, report: dict) -> "Standing":
        model = report["model"]
        return cls(str(version), float(model["fid"]), float(model["fid_bootstrap_std"]), report["feature_extractor"],
                   int(report["num_images"]), float(report["memorisation"]["pixels"]["memorised_share"]),
                   report.get("yardstick", {}).get("key", ""), report.get("dataset_fingerprint", ""))

    @classmethod
    def of_tags(cls, version: str, tags: dict[str, str]) -> "Standing | None":
        """None for a version registered before the gate (no bootstrap spread or sample count among its tags). Numbers
        that are there but not finite ('nan') are kept as they are: `decide` names them."""
        try:
            return cls(str(version), float(tags["fid"]), float(tags["fid_std"]), tags["feature_extractor"],
                       int(tags["num_images"]), float(tags["memorised_share"]), tags.get("yardstick", ""), tags.get("dataset_fingerprint", ""))
        except (KeyError, ValueError):
            return None


def measured(s: Standing) -> str:
    """How a standing was measured, in words: extractor, sample count and, where known, the reference data."""
    return f"{s.extractor} on {s.num_images} samples" + (f" against data {s.dataset[:12]}" if s.dataset else "")


def interval(s: Standing) -> str:
    return f"{s.fid:.2f} ± {Z * s.fid_std:.2f}"


def decide(
    challenger: Standing, champion: Standing | None, champion_version: str | None, max_memorised: float, how: str = "",
) -> tuple[bool, str]:
    """(move champion to the challenger?, why). `champion` None with a version: a champion the gate cannot read. `how`
    says how the champion's standing was measured when not by its own evaluation (re-scored head to head)."""
    if challenger.unsound():
        return False, f"v{challenger.version}'s scores cannot be compared: {'; '.join(challenger.unsound())}"
    if challenger.memorised_share > max_memorised:
        return False, (f"v{challenger.version} hands back training images: {challenger.memorised_share:.1%} of its samples are closer to "
                       f"a training image than 95 % of held-out images are (registry.max_memorised_share {max_memorised:.1%})")
    if champion_version is None:
        return True, "no champion yet"
    if champion is None:
        return False, f"champion v{champion_version} carries no FID interval (registered before the gate); move it with `gan-pipeline promote`"
    if champion.unsound():  # a NaN loses every comparison: the champion would be kept against anything as "not better"
        return True, (f"champion v{champion.version}'s scores cannot be compared ({'; '.join(champion.unsound())})"
                      f"{f' {how}' if how else ''}: v{challenger.version}, FID {interval(challenger)}, takes its place")
    if (champion.extractor, champion.num_images, champion.yardstick) != (challenger.extractor, challenger.num_images, challenger.yardstick):
        return False, (f"champion v{champion.version} was scored by {measured(champion)}, v{challenger.version} by {measured(challenger)}: "
                       "not comparable; move it with `gan-pipeline promote`")
    verdict = f"FID {interval(challenger)} against champion v{champion.version}'s {interval(champion)}" + (f" {how}" if how else "")
    # The difference's own 95 % interval, its spread that of two independent estimates. Asking the two intervals not to
    # overlap instead would be a test at about the 0.6 % level, blind to improvements the scores show plainly.
    lower, noise = champion.fid - challenger.fid, Z * math.hypot(challenger.fid_std, champion.fid_std)
    if lower > noise:
        return True, f"{verdict}: lower by {lower:.2f} ± {noise:.2f}, better beyond the noise"
    if lower > 0:
        return False, f"{verdict}: lower by {lower:.2f}, but within the noise (± {noise:.2f})"
    return False, f"{verdict}: not better"


def record(history_json: str | None, version: str, previous: str | None, why: str, by: str | None = None, rollback: bool = False) -> str:
    """The champion history with one more move appended, as the tag's JSON (the last HISTORY_KEPT moves)."""
    history = json.loads(history_json or "[]")
    history.append({"version": str(version), "previous": previous, "by": by or user(), "why": why, "rollback": rollback,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return json.dumps(history[-HISTORY_KEPT:])


def previous_champion(name: str, history_json: str | None, current: str) -> str:
    """The champion before the current one: the history replayed as a stack (a move pushes, a rollback pops), so
    repeated rollbacks walk back through earlier champions. A UsageError when there is none on record. Only the last
    HISTORY_KEPT moves are kept: replaying them gives the top of the true stack (its champions pushed by those moves), so
    a champion pushed before them is out of reach, and said to be, never taken for another."""
    moves = json.loads(history_json or "[]")
    stack: list[str] = []
    for move in moves:
        if move.get("rollback"):
            stack = stack[:-1]
        else:
            stack.append(move["version"])
    if len(stack) >= 2 and stack[-1] == str(current):
        return stack[-2]
    if moves and moves[0].get("previous") is not None:  # earlier moves are not on record: the list was cut to its last ones
        raise UsageError(f"{name}: no champion before v{current} among the last {len(moves)} moves of its champion history "
                         f"(only the last {HISTORY_KEPT} are kept); use `gan-pipeline promote {name} VERSION`")
    raise UsageError(f"{name}: no champion before v{current} on record; use `gan-pipeline promote {name} VERSION`")


def user() -> str:
    return os.environ.get("GAN_PIPELINE_USER") or getpass.getuser()
