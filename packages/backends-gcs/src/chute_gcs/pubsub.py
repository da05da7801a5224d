"""chute's queue on Google Cloud Pub/Sub: a topic and a pull subscription per API, and a
dead-letter topic and subscription beside them.

Resources (see docs/gcs.md for the whole layout and the IAM roles):

* topic and subscription ``<prefix>-<api>``: the API's queue. Message data: the request id.
  The subscription keeps unacked messages as long as results are kept (Pub/Sub caps it at 7
  days), never expires, and has a dead-letter policy to the ``-dead`` topic: a safety net (the
  dequeuer dead-letters long before, with its reason), and what makes Pub/Sub count
  ``deliveryAttempt``, chute's attempt number.
* topic and subscription ``<prefix>-<api>-dead``: its dead letters, with attributes
  ``chute-reason``, ``chute-attempts`` and ``chute-dead-at``.

Leases are ack deadlines (whole seconds, at most 600): a receive whose lease differs from the
subscription's ``ack_deadline`` sets it with one modifyAckDeadline; ``extend`` is a
modifyAckDeadline; ``release(delay)`` is a modifyAckDeadline to the delay (0: at once), so the
message keeps its delivery count. The attempt is Pub/Sub's ``deliveryAttempt`` plus
``chute-attempts`` on a message chute published again (a requeued dead letter, a release longer
than 600 s): attempts are fencing tokens and must never repeat. Pub/Sub ignores acks with stale
ack ids, so this process's :class:`~chute.backends.leases.LeaseBook` decides LeaseLost.

Pub/Sub has no delayed publish: ``send(delay=…)`` publishes with a ``chute-not-before``
attribute; a receive that pulls it early hides it (modifyAckDeadline until it is due) and, once
due, publishes it again without the attribute and acks the original, so the copy's first
delivery is attempt 1. (Nothing in chute sends with a delay today; retries release with one.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from chute.backends.base import DeadLetter, Delivery, Queue, QueueDepth
from chute.backends.dead_letters import ScannedDeadLetters, ScannedLetter
from chute.backends.leases import LeaseBook, LeaseState
from chute.errors import ChuteError, ConfigError, LeaseLost, Unsupported
from chute.protocol import now, validate_request_id
from chute_gcs.pubsub_client import PubSubClient
from chute_gcs.pubsub_settings import MAX_ACK_DEADLINE, MAX_RETENTION, parse_pubsub_url

log = logging.getLogger("chute.pubsub")

ATTR_REASON: Final = "chute-reason"
ATTR_ATTEMPTS: Final = "chute-attempts"
ATTR_DEAD_AT: Final = "chute-dead-at"
ATTR_NOT_BEFORE: Final = "chute-not-before"
#: What Pub/Sub's own dead-letter forwarding adds to a message it gave up on.
ATTR_SOURCE_COUNT: Final = "CloudPubSubDeadLetterSourceDeliveryCount"
#: Reasons are cut to this many characters (attribute values may hold 1024 bytes).
MAX_REASON: Final = 256
#: How long a dead-letter scan holds what it pulled (the dead subscription's ack deadline),
#: and how many it looks at.
SCAN_DEADLINE: Final = 60
#: Messages per pull, ack ids per acknowledge/modifyAckDeadline, messages per publish.
MAX_PULL: Final = 1000
CHUNK: Final = 500
#: A pulled message is handed out only this long before its first ack deadline ends at the
#: latest (seconds); after that it may be someone else's.
STALE_MARGIN: Final = 2.0


@dataclass(frozen=True)
class _Pulled:
    """A long pull's answer: when it was sent (its messages' ack deadlines run from no
    earlier), and what it brought."""

    started: float
    messages: list[dict[str, Any]]


@dataclass
class _Pulls:
    """An API's long pulls still open (kept by receives whose wait ended first) and messages
    pulled beyond what a receive asked for (at most a pull's worth)."""

    open: deque[asyncio.Future[_Pulled]] = field(default_factory=deque)
    surplus: deque[tuple[_Pulled, dict[str, Any]]] = field(default_factory=deque)


def _seconds(value: float, *, low: int, what: str) -> int:
    """Whole seconds for Pub/Sub, rounded up so a lease is never shorter than asked."""
    seconds = max(low, math.ceil(value))
    if seconds > MAX_ACK_DEADLINE:
        raise ValueError(
            f"Pub/Sub allows a {what} of at most {MAX_ACK_DEADLINE} s, not {value:g} s"
        )
    return seconds


def _number(attributes: dict[str, str], name: str) -> float | None:
    try:
        value = attributes.get(name)
        return float(value) if value is not None else None
    except ValueError:
        return None


def _timestamp(value: str | None) -> float:
    """An RFC 3339 publishTime as epoch seconds (0 if absent)."""
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _message(request_id: str, attributes: dict[str, str]) -> dict[str, Any]:
    message: dict[str, Any] = {"data": base64.b64encode(request_id.encode()).decode()}
    if attributes:
        message["attributes"] = attributes
    return message


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PubSubQueue(ScannedDeadLetters, Queue):
    """chute's :class:`~chute.backends.base.Queue` on Pub/Sub (``pubsub://<project>/<prefix>``)."""

    #: Ack deadlines are whole seconds.
    min_lease = 1.0
    #: Pub/Sub cannot count a subscription's messages (only Cloud Monitoring can, on Google
    #: Cloud; the emulator not at all): :meth:`depth` raises Unsupported.
    supports_depth = False

    def __init__(self, url: str) -> None:
        self.settings = parse_pubsub_url(url)
        self._client = PubSubClient(self.settings)
        self._ready: set[str] = set()
        self._leases = LeaseBook()
        self._pulls: dict[str, _Pulls] = {}

    @property
    def where(self) -> str:
        return self.settings.address

    # -- topics and subscriptions ----------------------------------------------------------

    async def ensure(self, api: str) -> None:
        """Make sure ``api``'s topics and subscriptions exist (created unless the URL says
        ``create=false``). Checked once per API and process."""
        if api not in self._ready:
            await self._resolve(api)
            self._ready.add(api)

    def _subscription_body(self, api: str, *, dead: bool) -> dict[str, Any]:
        s = self.settings
        if dead:
            return {
                "topic": s.topic(s.dead_name(api)),
                "ackDeadlineSeconds": SCAN_DEADLINE,
                "messageRetentionDuration": f"{MAX_RETENTION}s",
                "expirationPolicy": {},
            }
        return {
            "topic": s.topic(s.name(api)),
            "ackDeadlineSeconds": s.ack_deadline,
            "messageRetentionDuration": f"{s.message_retention}s",
            "expirationPolicy": {},
            "deadLetterPolicy": {
                "deadLetterTopic": s.topic(s.dead_name(api)),
                "maxDeliveryAttempts": s.max_delivery_attempts,
            },
        }

    async def _resolve(self, api: str) -> None:
        s = self.settings
        name, dead = s.name(api), s.dead_name(api)
        status, found = await self._client.call(
            "GET",
            s.subscription(name),
            doing=f"looking up subscription {name}",
            expect=frozenset({200, 404}),
        )
        if status == 200:
            await self._check(api, found)
            return
        if not s.create:
            raise ConfigError(
                f"{self.where}: subscription {name} of API {api!r} does not exist, and the URL "
                f"says create=false: create topics and subscriptions {name} and {dead} (see "
                "docs/gcs.md) or drop create=false"
            )
        # The dead letter first and the subscription last: a subscription that exists means
        # everything it needs does, and nothing is published before a subscription keeps it.
        await self._create_topic(dead)
        await self._create_subscription(dead, self._subscription_body(api, dead=True))
        await self._create_topic(name)
        created = await self._create_subscription(name, self._subscription_body(api, dead=False))
        if created is not None:
            await self._check(api, created)

    async def _create_topic(self, name: str) -> None:
        status, _ = await self._client.call(
            "PUT",
            self.settings.topic(name),
            {},
            doing=f"creating topic {name}",
            expect=frozenset({200, 409}),
        )
        if status == 200:
            log.info("created Pub/Sub topic", extra={"topic": name})

    async def _create_subscription(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the subscription; if it exists already, return what it is."""
        path = self.settings.subscription(name)
        status, _ = await self._client.call(
            "PUT", path, body, doing=f"creating subscription {name}", expect=frozenset({200, 409})
        )
        if status == 200:
            log.info("created Pub/Sub subscription", extra={"subscription": name})
            return None
        _, found = await self._client.call("GET", path, doing=f"looking up subscription {name}")
        return found

    async def _check(self, api: str, found: dict[str, Any]) -> None:
        """An existing subscription must dead-letter to chute's topic (that is what makes
        Pub/Sub count delivery attempts) and keep messages as long as results are kept: fix it
        when chute manages the resources, else refuse or say so once in the log."""
        s = self.settings
        wanted = self._subscription_body(api, dead=False)
        policy = found.get("deadLetterPolicy") or {}
        retention = str(found.get("messageRetentionDuration", "0s")).rstrip("s") or "0"
        no_policy = policy.get("deadLetterTopic") != wanted["deadLetterPolicy"]["deadLetterTopic"]
        short = float(retention) < s.message_retention
        if not (no_policy or short):
            return
        if not s.create:
            if no_policy:
                raise ConfigError(
                    f"{self.where}: subscription {s.name(api)} has no dead-letter policy to "
                    f"topic {s.dead_name(api)}; chute needs it (Pub/Sub counts delivery "
                    "attempts only with one): add it or drop create=false"
                )
            log.warning(
                "Pub/Sub subscription keeps messages shorter than results",
                extra={"subscription": s.name(api), "retention": retention},
            )
            return
        await self._create_topic(s.dead_name(api))
        await self._create_subscription(s.dead_name(api), self._subscription_body(api, dead=True))
        await self._client.call(
            "PATCH",
            s.subscription(s.name(api)),
            {
                "subscription": {
                    "deadLetterPolicy": wanted["deadLetterPolicy"],
                    "messageRetentionDuration": wanted["messageRetentionDuration"],
                },
                "updateMask": "deadLetterPolicy,messageRetentionDuration",
            },
            doing=f"updating subscription {s.name(api)}",
        )

    # -- sending and receiving -------------------------------------------------------------

    async def _publish(self, topic_name: str, messages: list[dict[str, Any]], doing: str) -> None:
        for chunk in _chunks(messages):
            await self._client.call(
                "POST",
                f"{self.settings.topic(topic_name)}:publish",
                {"messages": list(chunk)},
                doing=doing,
            )

    async def send(self, api: str, request_id: str, *, delay: float = 0.0) -> None:
        await self._send(api, request_id, delay=delay)

    async def _send(
        self, api: str, request_id: str, *, delay: float = 0.0, attempts: int = 0
    ) -> None:
        validate_request_id(request_id)
        await self.ensure(api)
        attributes: dict[str, str] = {}
        if delay > 0:
            attributes[ATTR_NOT_BEFORE] = repr(now() + delay)
        if attempts:
            attributes[ATTR_ATTEMPTS] = str(attempts)
        await self._publish(
            self.settings.name(api),
            [_message(request_id, attributes)],
            f"sending {request_id} to {api}",
        )

    async def _modify(self, api: str, ack_ids: Sequence[str], seconds: int, doing: str) -> None:
        await self._modify_on(self.settings.name(api), ack_ids, seconds, doing)

    async def _modify_on(self, name: str, ack_ids: Sequence[str], seconds: int, doing: str) -> None:
        for chunk in _chunks(ack_ids):
            await self._client.call(
                "POST",
                f"{self.settings.subscription(name)}:modifyAckDeadline",
                {"ackIds": list(chunk), "ackDeadlineSeconds": seconds},
                doing=doing,
            )

    async def _acknowledge(self, name: str, ack_ids: Sequence[str], doing: str) -> None:
        for chunk in _chunks(ack_ids):
            await self._client.call(
                "POST",
                f"{self.settings.subscription(name)}:acknowledge",
                {"ackIds": list(chunk)},
                doing=doing,
            )

    async def _pull_now(self, name: str, max_messages: int, doing: str) -> list[dict[str, Any]]:
        """One pull that answers at once, with what is there (dead-letter scans)."""
        _, reply = await self._client.call(
            "POST",
            f"{self.settings.subscription(name)}:pull",
            {"maxMessages": min(max_messages, MAX_PULL), "returnImmediately": True},
            doing=doing,
        )
        messages: list[dict[str, Any]] = reply.get("receivedMessages", [])
        return messages

    async def _long_pull(self, api: str, max_messages: int) -> _Pulled:
        """One pull that the server holds open until a message is there."""
        started = time.monotonic()
        try:
            _, reply = await self._client.call(
                "POST",
                f"{self.settings.subscription(self.settings.name(api))}:pull",
                {"maxMessages": min(max_messages, MAX_PULL)},
                doing=f"receiving from {api}",
                hold=True,
            )
        except TimeoutError:  # open for HOLD_LIMIT with nothing: a fresh pull goes next
            return _Pulled(started, [])
        return _Pulled(started, reply.get("receivedMessages", []))

    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Delivery]:
        """Long pulls are never abandoned: a pull still open when ``wait`` ends is kept and
        the next receive of the API waits on it instead of opening another. (A pull the client
        abandons may still be handed messages, which then wait out their ack deadline: the
        emulator does this every time, Google Cloud now and then.)"""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        deadline = _seconds(lease, low=1, what="lease")
        await self.ensure(api)
        pulls = self._pulls.setdefault(api, _Pulls())
        end = time.monotonic() + max(0.0, wait)
        while True:
            if pulls.surplus:
                count = min(max_messages, len(pulls.surplus))
                pulled = [pulls.surplus.popleft() for _ in range(count)]
            else:
                result = await self._pull_for(api, pulls, max_messages, end)
                if result is None:
                    return []
                ready = [(result, m) for m in await self._sort_out(api, result.messages)]
                pulls.surplus.extend(ready[max_messages:])
                pulled = ready[:max_messages]
            delivered = await self._deliveries(api, pulled, deadline) if pulled else []
            if delivered:
                return delivered
            if end - time.monotonic() <= 0.05:
                return []

    async def _pull_for(
        self, api: str, pulls: _Pulls, max_messages: int, end: float
    ) -> _Pulled | None:
        """A pull's answer by ``end`` (time.monotonic), or None if none came: the API's kept
        pull if there is one, else a new long pull (kept if it outlasts ``end``), else, with no
        time to wait, an immediate pull that leaves nothing behind."""
        if not pulls.open and end - time.monotonic() <= 0.05:
            started = time.monotonic()
            name = self.settings.name(api)
            return _Pulled(
                started, await self._pull_now(name, max_messages, f"receiving from {api}")
            )
        task = pulls.open.popleft() if pulls.open else None
        if task is None:
            task = asyncio.ensure_future(self._long_pull(api, max_messages))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, end - time.monotonic()))
        except BaseException:
            pulls.open.append(task)
            raise
        if not done:
            pulls.open.append(task)
            return None
        return task.result()

    async def _deliveries(
        self, api: str, pulled: list[tuple[_Pulled, dict[str, Any]]], deadline: int
    ) -> list[Delivery]:
        """Hand out what was pulled, each held for ``deadline`` seconds from now: a pull that
        answered at once holds its messages for the subscription's ack deadline from its start;
        anything else (another lease, a pull that waited, a surplus) is set with one
        modifyAckDeadline. A message whose ack deadline (counted from its pull's start) is
        nearly over may be someone else's by now: it is given back, never handed out on a lease
        that may not be ours (a dequeuer that stopped receiving for a while, then came back)."""
        held = self.settings.ack_deadline
        moment = time.monotonic()
        usable = [(p, m) for p, m in pulled if moment < p.started + held - STALE_MARGIN]
        stale = [m["ackId"] for p, m in pulled if moment >= p.started + held - STALE_MARGIN]
        if stale:
            with contextlib.suppress(ChuteError):
                await self._modify(api, stale, 0, f"giving back stale messages of {api}")
        if not usable:
            return []
        started = min(p.started for p, _ in usable)
        if deadline != held or any(moment - p.started >= 1.0 for p, _ in usable):
            started = time.monotonic()
            await self._modify(api, [m["ackId"] for _, m in usable], deadline, f"leasing {api}")
            held = deadline
        return [self._delivery(api, m, started, held) for _, m in usable]

    async def _sort_out(self, api: str, pulled: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pulled messages that are due; the others are hidden until they are (or, when
        due, published again without their not-before and acked)."""
        ready: list[dict[str, Any]] = []
        due: list[dict[str, Any]] = []
        hide: dict[int, list[str]] = {}
        moment = now()
        for received in pulled:
            attributes = received["message"].get("attributes", {})
            not_before = _number(attributes, ATTR_NOT_BEFORE)
            if not_before is None:
                ready.append(received)
            elif not_before > moment:
                seconds = min(MAX_ACK_DEADLINE, math.ceil(not_before - moment))
                hide.setdefault(seconds, []).append(received["ackId"])
            else:
                due.append(received)
        for seconds, ack_ids in hide.items():
            await self._modify(api, ack_ids, seconds, f"holding back delayed messages of {api}")
        if due:
            copies = []
            for received in due:
                attributes = dict(received["message"].get("attributes", {}))
                del attributes[ATTR_NOT_BEFORE]
                copies.append({**received["message"], "attributes": attributes})
            name = self.settings.name(api)
            # Publish first, ack second: a failure in between leaves a duplicate (fenced by
            # the store), never a lost message.
            await self._publish(
                name,
                [{k: m[k] for k in ("data", "attributes") if m.get(k)} for m in copies],
                f"releasing delayed messages of {api}",
            )
            await self._acknowledge(
                name, [r["ackId"] for r in due], f"releasing delayed messages of {api}"
            )
        return ready

    def _delivery(self, api: str, received: dict[str, Any], started: float, held: int) -> Delivery:
        message = received["message"]
        ack_id = str(received["ackId"])
        attributes = message.get("attributes", {})
        delivered = received.get("deliveryAttempt")
        if delivered is None:
            log.warning(
                "Pub/Sub gave no deliveryAttempt (the subscription lost its dead-letter "
                "policy?): attempts cannot fence redeliveries",
                extra={"api": api},
            )
            delivered = 1
        before = int(_number(attributes, ATTR_ATTEMPTS) or 0)
        self._leases.held(ack_id, started, held)
        request_id = base64.b64decode(message.get("data", "")).decode()
        return Delivery(api, request_id, before + int(delivered), ack_id)

    # -- leases ----------------------------------------------------------------------------

    def _check_lease(self, delivery: Delivery) -> None:
        state = self._leases.state(delivery.receipt)
        if state in (LeaseState.LAPSED, LeaseState.SETTLED):
            raise LeaseLost(
                f"request {delivery.request_id} of API {delivery.api}: the lease of attempt "
                f"{delivery.attempt} is gone ({state.value})"
            )

    async def extend(self, delivery: Delivery, lease: float) -> None:
        seconds = _seconds(lease, low=1, what="lease")
        self._check_lease(delivery)
        started = time.monotonic()
        await self._modify(
            delivery.api,
            [delivery.receipt],
            seconds,
            f"extending the lease of {delivery.request_id} in {delivery.api}",
        )
        self._leases.held(delivery.receipt, started, seconds)

    async def ack(self, delivery: Delivery) -> None:
        self._check_lease(delivery)
        await self._acknowledge(
            self.settings.name(delivery.api),
            [delivery.receipt],
            f"acking {delivery.request_id} in {delivery.api}",
        )
        self._leases.settled(delivery.receipt)

    async def release(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        self._check_lease(delivery)
        doing = f"releasing {delivery.request_id} in {delivery.api}"
        if delay <= MAX_ACK_DEADLINE:
            # The message stays where it is, hidden for ``delay``; its delivery count (the
            # next attempt) goes on.
            await self._modify(delivery.api, [delivery.receipt], math.ceil(max(0.0, delay)), doing)
        else:
            # Longer than an ack deadline can hold: a copy that waits, carrying the attempts.
            await self._send(
                delivery.api, delivery.request_id, delay=delay, attempts=delivery.attempt
            )
            await self._acknowledge(self.settings.name(delivery.api), [delivery.receipt], doing)
        self._leases.settled(delivery.receipt)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._check_lease(delivery)
        attributes = {ATTR_ATTEMPTS: str(delivery.attempt), ATTR_DEAD_AT: repr(now())}
        if reason:
            attributes[ATTR_REASON] = reason[:MAX_REASON]
        doing = f"dead-lettering {delivery.request_id} of {delivery.api}"
        # Copy first, ack second: a failure in between leaves a duplicate dead letter (its
        # requeue is fenced by the store), never a lost one.
        await self._publish(
            self.settings.dead_name(delivery.api),
            [_message(delivery.request_id, attributes)],
            doing,
        )
        self._check_lease(delivery)
        await self._acknowledge(self.settings.name(delivery.api), [delivery.receipt], doing)
        self._leases.settled(delivery.receipt)

    # -- dead letters ----------------------------------------------------------------------

    async def _scan_dead(self, api: str) -> list[ScannedLetter]:
        """Pull every dead letter of ``api`` (up to scan_limit), each held for SCAN_DEADLINE
        seconds; the caller acts on them or lets them go (:meth:`_let_go`)."""
        await self.ensure(api)
        dead = self.settings.dead_name(api)
        seen: dict[str, ScannedLetter] = {}
        while len(seen) < self.scan_limit:
            pulled = await self._pull_now(
                dead, self.scan_limit - len(seen), f"reading the dead letters of {api}"
            )
            fresh = [r for r in pulled if r["message"].get("messageId") not in seen]
            for received in fresh:
                seen[str(received["message"].get("messageId"))] = self._scanned(api, received)
            if not fresh:
                break
        return list(seen.values())

    def _scanned(self, api: str, received: dict[str, Any]) -> ScannedLetter:
        message = received["message"]
        attributes: dict[str, str] = message.get("attributes", {})
        published = _timestamp(message.get("publishTime"))
        request_id = base64.b64decode(message.get("data", "")).decode()
        if ATTR_DEAD_AT in attributes:  # dead-lettered by chute
            attempts = int(_number(attributes, ATTR_ATTEMPTS) or 0)
            reason = attributes.get(ATTR_REASON, "")
            dead_at = _number(attributes, ATTR_DEAD_AT) or published
        else:  # forwarded by the subscription's dead-letter policy
            attempts = int(_number(attributes, ATTR_ATTEMPTS) or 0) + int(
                _number(attributes, ATTR_SOURCE_COUNT) or 0
            )
            reason = "Pub/Sub dead-letter policy: delivered too many times (maxDeliveryAttempts)"
            dead_at = published
        letter = DeadLetter(api, request_id, reason, attempts, dead_at)
        return ScannedLetter(letter, str(received["ackId"]), published)

    async def _let_go(self, api: str, scanned: list[ScannedLetter]) -> None:
        await self._modify_on(
            self.settings.dead_name(api),
            [s.handle for s in scanned],
            0,
            f"letting go of the dead letters of {api}",
        )

    async def _remove(self, api: str, scanned: list[ScannedLetter]) -> None:
        await self._acknowledge(
            self.settings.dead_name(api),
            [s.handle for s in scanned],
            f"removing dead letters of {api}",
        )

    async def _resend(self, api: str, scanned: list[ScannedLetter]) -> None:
        await self._publish(
            self.settings.name(api),
            [
                _message(s.letter.request_id, {ATTR_ATTEMPTS: str(s.letter.attempts)})
                for s in scanned
            ],
            f"requeueing dead letters of {api}",
        )

    # -- depth and health ------------------------------------------------------------------

    async def depth(self, api: str) -> QueueDepth:
        raise Unsupported(
            f"{self.where}: Pub/Sub cannot count the messages of a subscription (Google "
            "Cloud publishes the backlog only as the Cloud Monitoring metric "
            "subscription/num_undelivered_messages, which KEDA's gcp-pubsub scaler reads); "
            "queue depth is not available"
        )

    async def ping(self) -> None:
        await self._client.call(
            "GET", f"projects/{self.settings.project}/topics?pageSize=1", doing="ping"
        )

    async def aclose(self) -> None:
        pulls, self._pulls = self._pulls, {}
        for api, kept in pulls.items():
            for task in kept.open:
                task.cancel()
            surplus = [m["ackId"] for _, m in kept.surplus]
            if surplus:  # handed to nobody: visible again at once
                with contextlib.suppress(Exception):
                    await self._modify(api, surplus, 0, f"giving back messages of {api}")
        await self._client.aclose()
