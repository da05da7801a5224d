"""The Lua scripts that make each queue and store operation one atomic round trip.

The sources live next to this module in ``lua/``; each file's header says its keys, arguments
and return value.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc


class Script:
    """A Lua script called with EVALSHA: one round trip, plus one EVAL the first time a server
    (or a restarted one, whose script cache is empty) sees it."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: aioredis.Redis, keys: list[str], args: list[bytes | str | int | float]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


def _source(name: str) -> str:
    return (files("chute_redis") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _load(name: str, **uses: str) -> Script:
    """The script ``lua/<name>.lua``; ``uses`` maps a local function name to another script
    it calls (``receive="queue_receive"``): that script's source becomes the function's body,
    with its own ``KEYS`` and ``ARGV`` as the parameters, so no logic is written twice."""
    source = "".join(
        f"local function {function}(KEYS, ARGV)\n{_source(used)}\nend\n"
        for function, used in uses.items()
    )
    source += _source(name)
    # The name without its role ("queue_dead_letter" → "dead_letter") reads well in errors.
    return Script(name.split("_", 1)[1].replace("_", " "), source)


QUEUE_SEND = _load("queue_send")
QUEUE_RECEIVE = _load("queue_receive")
QUEUE_EXTEND = _load("queue_extend")
QUEUE_ACK = _load("queue_ack")
QUEUE_RELEASE = _load("queue_release")
QUEUE_DEAD_LETTER = _load("queue_dead_letter")
QUEUE_LIST_DEAD = _load("queue_list_dead")
QUEUE_REQUEUE_DEAD = _load("queue_requeue_dead")
QUEUE_PURGE_DEAD = _load("queue_purge_dead")
QUEUE_DEPTH = _load("queue_depth")
STORE_CREATE = _load("store_create")
STORE_WRITE_IF = _load("store_write_if")
#: One server holds queue and store: receive with records, write and ack (``chute_redis.joint``).
JOINT_CREATE = _load("joint_create", create="store_create", send="queue_send")
JOINT_RECEIVE = _load("joint_receive", receive="queue_receive")
JOINT_FINISH = _load("joint_finish", write_if="store_write_if", ack="queue_ack")
#: Batches (``Store.write_many``, ``Joint.settle_many``): the single scripts in a loop.
STORE_WRITE_MANY = _load("store_write_many", write_if="store_write_if")
JOINT_SETTLE_MANY = _load("joint_settle_many", write_if="store_write_if", ack="queue_ack")
JOINT_CREATE_MANY = _load("joint_create_many", create="store_create")
