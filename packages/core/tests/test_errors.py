"""chute.errors draws its tree in its docstring; the drawing is checked against the classes."""

from __future__ import annotations

import inspect
import re

import chute.errors
from chute.errors import ChuteError

NUMBERS = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def drawn_tree() -> list[tuple[int, str]]:
    """(depth, class name) for each line of the drawing, in order."""
    doc = chute.errors.__doc__ or ""
    rows = []
    for line in doc.splitlines():
        match = re.match(r"^    ((?:│   |    )*)(?:├── |└── )?([A-Z]\w+)( \*)?(?:\s|$)", line)
        if match and (match[2] == "ChuteError" or "── " in line):
            depth = 0 if match[2] == "ChuteError" else len(match[1]) // 4 + 1
            rows.append((depth, match[2]))
    return rows


def test_every_chute_error_is_drawn_under_its_base() -> None:
    rows = drawn_tree()
    assert rows[0] == (0, "ChuteError")
    parents: list[str] = []
    drawn: set[str] = set()
    for depth, name in rows:
        del parents[depth:]
        cls = getattr(chute.errors, name)
        if parents:
            parent = getattr(chute.errors, parents[-1])
            assert parent in cls.__bases__, f"{name} is drawn under {parents[-1]}"
        parents.append(name)
        drawn.add(name)
    defined = {
        name
        for name, cls in vars(chute.errors).items()
        if inspect.isclass(cls) and issubclass(cls, ChuteError) and cls.__module__ == "chute.errors"
    }
    assert defined == drawn


def test_the_family_count_in_the_first_line_is_right() -> None:
    families = [name for depth, name in drawn_tree() if depth == 1]
    first_line = (chute.errors.__doc__ or "").splitlines()[0]
    word = re.search(r"one root, (\w+) families", first_line)
    assert word is not None
    assert NUMBERS[word[1]] == len(set(families)) == 7


def test_errors_that_moved_here_keep_their_old_names() -> None:
    from chute._dev import DevError
    from chute._webhook_targets import TargetRefused
    from chute.config import ConfigValidationError
    from chute.webhooks import WebhookSecretError, WebhookVerificationError

    assert ConfigValidationError is chute.errors.ConfigValidationError
    assert DevError is chute.errors.DevError
    assert TargetRefused is chute.errors.TargetRefused
    assert WebhookSecretError is chute.errors.WebhookSecretError
    assert WebhookVerificationError is chute.errors.WebhookVerificationError
