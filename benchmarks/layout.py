"""What a string record layout would cost Redis against the hash layout, per request.

The Redis store keeps a request in a hash (record JSON, version, token, expiry, start hint and a
small payload as fields; docs/redis.md). The alternative weighed in issue 12: one string per
request holding the same values packed with msgpack, so that a create is a single
``SET … PXAT … NX GET``. This measures the three steps a request's record goes through, in
each layout, against one private redis-server:

* create: the real batch create script (joint_create_many.lua, with the queue's send) against
  a prototype doing the string ``SET`` and the same per-batch queue and index commands;
* receive: read each record (and payload) and write it back one version on (``HMGET`` +
  ``HSET`` against ``GET`` + unpack + pack + ``SET KEEPTTL``; the start's splice, the same
  work in both, left out);
* settle: the compare-and-set with the result (``HMGET`` + ``HSET`` against ``GET`` +
  unpack + pack + ``SET KEEPTTL``).

The two variants of each step alternate block by block (which takes the machine's drift out),
and Redis's time is read from ``INFO commandstats`` (the scripts' own time) and ``INFO cpu``
(everything: reading the arguments, replying)::

    python -m benchmarks.layout [--batch 6] [--blocks 30] [--calls 40]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from benchmarks.cli import redis_for
from chute.protocol import RequestRecord, Status, now, record_encoder
from chute_redis import scripts
from chute_redis.joint import RedisJoint
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore, start_hint

API = "layout"
PAYLOAD = b'{"text": "hello world", "n": 12345}'
RESULT = b'{"text": "hello world", "n": 12345, "ok": true}'
#: Records each variant's receive and settle cycle through.
POOL = 600

#: KEYS: one record key per request, then visible, listing index, wake.
#: ARGV: per request packed value, expiry (ms), id, created_at.
STRING_CREATE = """
local out, queued, indexed = {}, {}, {}
local n = #KEYS - 3
for i = 1, n do
  local a = (i - 1) * 4
  if redis.call('SET', KEYS[i], ARGV[a + 1], 'PXAT', ARGV[a + 2], 'NX', 'GET') then
    out[i] = 0
  else
    out[i] = 1
    queued[#queued + 1] = ARGV[a + 3]
    indexed[#indexed + 1] = ARGV[a + 4]
    indexed[#indexed + 1] = ARGV[a + 3]
  end
end
redis.call('RPUSH', KEYS[n + 1], unpack(queued))
redis.call('ZADD', KEYS[n + 2], unpack(indexed))
if redis.call('LLEN', KEYS[n + 3]) == 0 then redis.call('RPUSH', KEYS[n + 3], '1') end
return out
"""
HASH_RECEIVE = """
local out = {}
for i = 1, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'record', 'version', 'payload', 'start')
  local v = tonumber(f[2]) + 1
  redis.call('HSET', KEYS[i], 'record', f[1], 'version', string.format('%d', v))
  out[#out + 1] = f[1]; out[#out + 1] = v; out[#out + 1] = f[3]
end
return out
"""
STRING_RECEIVE = """
local out = {}
for i = 1, #KEYS do
  local f = cmsgpack.unpack(redis.call('GET', KEYS[i]))
  f[2] = f[2] + 1
  redis.call('SET', KEYS[i], cmsgpack.pack(f), 'KEEPTTL')
  out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[6]
end
return out
"""
#: ARGV: per request the expected version and the new record JSON, then the result.
HASH_SETTLE = """
local written = 0
for i = 1, #KEYS do
  local held = redis.call('HMGET', KEYS[i], 'version', 'expires')
  if held[1] == ARGV[2 * i - 1] then written = written + 1 end
  local v = string.format('%d', tonumber(held[1]) + 1)
  redis.call('HSET', KEYS[i], 'record', ARGV[2 * i], 'version', v, 'result', ARGV[#ARGV])
end
return written
"""
STRING_SETTLE = """
local written = 0
for i = 1, #KEYS do
  local f = cmsgpack.unpack(redis.call('GET', KEYS[i]))
  if f[2] == tonumber(ARGV[2 * i - 1]) then written = written + 1 end
  f[1], f[2], f[7] = ARGV[2 * i], f[2] + 1, ARGV[#ARGV]
  redis.call('SET', KEYS[i], cmsgpack.pack(f), 'KEEPTTL')
end
return written
"""


def _record() -> RequestRecord:
    t = now()
    return RequestRecord(
        id=str(uuid.uuid4()),
        api=API,
        status=Status.IN_QUEUE,
        created_at=t,
        expires_at=t + 86400,
        content_type="application/json",
        payload_size=len(PAYLOAD),
    )


def _packed(record: RequestRecord) -> bytes:
    """The string layout's value: the hash's fields in a msgpack array (text, as Redis's
    cmsgpack reads no binary type)."""
    raw = record_encoder.encode(record)
    expires = int(record.expires_at * 1000)
    fields = [raw.decode(), 1, secrets.token_hex(8), expires, start_hint(record, raw)]
    return msgspec.msgpack.encode([*fields, PAYLOAD.decode()])


class Bench:
    def __init__(self, url: str, batch: int) -> None:
        self.r = redis.Redis.from_url(url)
        self.store, self.queue = RedisStore(url), RedisQueue(url)
        self.joint = RedisJoint(self.queue, self.store)
        self.batch = batch
        self.prefix = self.store.record_prefix(API)
        self.sha = {
            name: self.r.script_load(source)
            for name, source in [
                ("string_create", STRING_CREATE),
                ("hash_receive", HASH_RECEIVE),
                ("string_receive", STRING_RECEIVE),
                ("hash_settle", HASH_SETTLE),
                ("string_settle", STRING_SETTLE),
            ]
        }
        for script in (scripts.JOINT_CREATE_MANY, scripts.STORE_CREATE):
            self.r.script_load(script.source)
        self.hash_keys: list[str] = []
        self.string_keys: list[str] = []
        for _ in range(POOL):
            record = _record()
            keys, args = self.store.create_args(record, "hash", PAYLOAD, secrets.token_hex(8))
            self.r.evalsha(scripts.STORE_CREATE.sha, len(keys), *keys, *args)
            self.hash_keys.append(keys[0])
            self.string_keys.append(keys[0] + ":s")
            self.r.set(keys[0] + ":s", _packed(record), pxat=int(record.expires_at * 1000))
        self.at = {"hash": 0, "string": 0}
        self.new_record = record_encoder.encode(_record())

    def _pick(self, layout: str) -> list[str]:
        pool = self.hash_keys if layout == "hash" else self.string_keys
        i = self.at[layout]
        self.at[layout] = (i + self.batch) % (POOL - self.batch)
        return pool[i : i + self.batch]

    def create(self, layout: str) -> Any:
        return self._hash_create() if layout == "hash" else self._string_create()

    def _hash_create(self) -> Any:
        items = [(_record(), PAYLOAD) for _ in range(self.batch)]
        keys, args = self.joint.create_many_args(items)
        return self.r.evalsha(scripts.JOINT_CREATE_MANY.sha, len(keys), *keys, *args)

    def _string_create(self) -> Any:
        keys: list[str] = []
        args: list[Any] = []
        for _ in range(self.batch):
            record = _record()
            keys.append(f"{self.prefix}{{{record.id}}}:s")
            expires = str(int(record.expires_at * 1000))
            args += [_packed(record), expires, record.id, repr(record.created_at)]
        visible, _, _, wake = self.queue.send_keys(API)
        keys += [visible + ":s", f"{self.prefix}index:s", wake + ":s"]
        return self.r.evalsha(self.sha["string_create"], len(keys), *keys, *args)

    def receive(self, layout: str) -> Any:
        keys = self._pick(layout)
        return self.r.evalsha(self.sha[f"{layout}_receive"], len(keys), *keys)

    def settle(self, layout: str) -> Any:
        keys = self._pick(layout)
        args: list[Any] = []
        for _ in keys:
            args += ["7", self.new_record]
        return self.r.evalsha(self.sha[f"{layout}_settle"], len(keys), *keys, *args, RESULT)

    def _stats(self) -> tuple[int, float]:
        scripts_us = int(self.r.info("commandstats")["cmdstat_evalsha"]["usec"])
        cpu = self.r.info("cpu")
        return scripts_us, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def compare(self, step: str, blocks: int, calls: int) -> str:
        run_step: Callable[[str], Any] = getattr(self, step)
        variants = {layout: functools.partial(run_step, layout) for layout in ("hash", "string")}
        for run in variants.values():
            run()  # warm: the scripts compiled, the first keys made
        totals = {layout: [0.0, 0.0] for layout in variants}
        for block in range(blocks):
            order = ["hash", "string"] if block % 2 == 0 else ["string", "hash"]
            for layout in order:
                us, cpu = self._stats()
                for _ in range(calls):
                    variants[layout]()
                us_after, cpu_after = self._stats()
                totals[layout][0] += us_after - us
                totals[layout][1] += (cpu_after - cpu) * 1e6
        requests = blocks * calls * self.batch
        cells = [
            f"{layout} {t[0] / requests:.1f} µs in scripts, {t[1] / requests:.1f} µs of CPU"
            for layout, t in totals.items()
        ]
        return f"{step} (batch {self.batch}), per request: " + "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=6, help="requests per script call")
    parser.add_argument("--blocks", type=int, default=30, help="blocks per variant")
    parser.add_argument("--calls", type=int, default=40, help="script calls per block")
    parser.add_argument("--redis-url", help="a Redis to use (default: a private redis-server)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bench = Bench(redis_for(stack, args.redis_url), args.batch)
        for step in ("create", "receive", "settle"):
            print(bench.compare(step, args.blocks, args.calls), flush=True)


if __name__ == "__main__":
    main()
