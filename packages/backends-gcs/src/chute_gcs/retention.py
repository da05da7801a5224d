"""The bucket lifecycle rule that expires chute's objects: one age-based Delete rule scoped to
chute's prefix (``matchesPrefix``), merged into whatever rules the bucket already has.

GCS counts a rule's ``age`` in whole days from an object's creation; a record is rewritten on
every status change, so it lives ``age`` days past its last change, its payload ``age`` days
past the submit. Reads check ``expires_at`` themselves, so a request is gone on time even
though lifecycle deletions run up to a day late.
"""

from __future__ import annotations

import math
from typing import Any

SECONDS_PER_DAY = 86400.0


def retention_days(retention: float) -> int:
    """Whole days for a lifecycle ``age`` (rounded up, at least 1)."""
    if not retention > 0:
        raise ValueError(f"retention must be positive, not {retention!r}")
    return max(1, math.ceil(retention / SECONDS_PER_DAY - 1e-9))


def chute_rule(prefix: str, days: int) -> dict[str, Any]:
    """The rule: delete objects under ``prefix/`` ``days`` days after they were written."""
    return {
        "action": {"type": "Delete"},
        "condition": {"age": days, "matchesPrefix": [f"{prefix}/"]},
    }


def _is_ours(rule: Any, prefix: str) -> bool:
    if not isinstance(rule, dict):
        return False
    condition = rule.get("condition") or {}
    return (
        (rule.get("action") or {}).get("type") == "Delete"
        and condition.get("matchesPrefix") == [f"{prefix}/"]
        and set(condition) <= {"age", "matchesPrefix"}
    )


def merge_rules(
    existing: list[dict[str, Any]], prefix: str, days: int
) -> tuple[list[dict[str, Any]], bool]:
    """The bucket's rules with chute's rule for ``prefix`` in place, and whether they changed.

    Other rules (other prefixes, other actions, the user's own) are kept as they are; an earlier
    chute rule for the same prefix with another age is replaced, not duplicated.
    """
    wanted = chute_rule(prefix, days)
    kept = [rule for rule in existing if not _is_ours(rule, prefix)]
    ours = [rule for rule in existing if _is_ours(rule, prefix)]
    if len(ours) == 1 and ours[0]["condition"].get("age") == days:
        return list(existing), False
    return [*kept, wanted], True
