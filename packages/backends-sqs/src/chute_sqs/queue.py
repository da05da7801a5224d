"""chute's queue on Amazon SQS: one standard queue per API, and a dead-letter queue beside it.

Queues (see docs/sqs.md for the whole layout):

* ``<prefix>-<api>``: the API's queue. Message body: the request id. Retention: the result
  retention (at least; SQS caps it at 14 days). A redrive policy moves a message SQS delivered
  ``max_receive_count`` times to the dead-letter queue (a safety net: the dequeuer dead-letters
  long before, with its reason).
* ``<prefix>-<api>-dlq``: its dead letters, kept 14 days, with message attributes
  ``chute-reason``, ``chute-attempts`` and ``chute-dead-at``.

A lease is the message's visibility timeout (whole seconds); ``attempt`` is SQS's
``ApproximateReceiveCount`` plus ``chute-attempts`` on a message requeued from the dead letter
(attempts are fencing tokens and must never repeat). Receiving long-polls (``WaitTimeSeconds``,
at most 20 s per call), never a sleep loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from botocore.exceptions import ClientError

from chute.backends.base import DeadLetter, Delivery, Queue, QueueDepth
from chute.backends.dead_letters import ScannedDeadLetters, ScannedLetter
from chute.errors import BackendError, ConfigError, LeaseLost
from chute.protocol import now, validate_request_id
from chute_sqs.client import Clients, error_code, sdk_errors
from chute_sqs.leases import LeaseBook, LeaseState
from chute_sqs.settings import SQS_MAX_RETENTION, parse_sqs_url

log = logging.getLogger("chute.sqs")

#: SQS's own limits.
MAX_WAIT: Final = 20  # WaitTimeSeconds
MAX_BATCH: Final = 10  # messages per receive, entries per batch call
MAX_DELAY: Final = 900  # DelaySeconds
MAX_VISIBILITY: Final = 12 * 3600  # VisibilityTimeout
#: The visibility timeout of a fresh queue (receives always set their own lease).
DEFAULT_VISIBILITY: Final = 30
#: How long a dead-letter scan hides the messages it looked at, and how many it looks at.
SCAN_VISIBILITY: Final = 60

ATTR_REASON: Final = "chute-reason"
ATTR_ATTEMPTS: Final = "chute-attempts"
ATTR_DEAD_AT: Final = "chute-dead-at"
#: Reasons are cut to this many characters (message attributes share a 256 KiB limit).
MAX_REASON: Final = 4096
_MISSING_QUEUE: Final = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_STALE_HANDLE: Final = frozenset(
    {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}
)


@dataclass(frozen=True)
class _Urls:
    queue: str
    dlq: str


def _seconds(value: float, *, low: int, high: int, what: str) -> int:
    """Whole seconds for SQS, rounded up so a lease or a delay is never shorter than asked."""
    seconds = max(low, math.ceil(value))
    if seconds > high:
        raise ValueError(f"SQS allows a {what} of at most {high} s, not {value:g} s")
    return seconds


def _number(attributes: dict[str, Any], name: str) -> float | None:
    value = attributes.get(name, {}).get("StringValue")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class SqsQueue(ScannedDeadLetters, Queue):
    """chute's :class:`~chute.backends.base.Queue` on Amazon SQS (``sqs://<queue-prefix>``)."""

    #: Visibility timeouts are whole seconds.
    min_lease = 1.0
    #: ReceiveMessage hands out up to 10 messages per call.
    max_batch = MAX_BATCH
    #: SQS counts a message hidden by ChangeMessageVisibility as in flight
    #: (ApproximateNumberOfMessagesNotVisible), not as delayed, until its delay passes.
    depth_counts_delayed_as_queued = False

    def __init__(self, url: str) -> None:
        self.settings = parse_sqs_url(url)
        self._clients = Clients("sqs", self.settings.endpoint)
        self._urls: dict[str, _Urls] = {}
        self._leases = LeaseBook()

    @property
    def where(self) -> str:
        return self._clients.where

    # -- queues ----------------------------------------------------------------------------

    async def queue_urls(self, api: str) -> tuple[str, str]:
        """The URLs of ``api``'s queue and dead-letter queue, created on first use unless the
        URL says ``create=false``. Resolved once per API and process."""
        urls = self._urls.get(api)
        if urls is None:
            urls = self._urls[api] = await self._resolve(api)
        return urls.queue, urls.dlq

    async def _resolve(self, api: str) -> _Urls:
        name, dlq_name = self.settings.queue_name(api), self.settings.dlq_name(api)
        client = await self._clients.get()
        found = {n: await self._find(client, n) for n in (dlq_name, name)}
        missing = [n for n, url in found.items() if url is None]
        if missing and not self.settings.create:
            raise ConfigError(
                f"{self.where}: queue {' and '.join(missing)} of API {api!r} does not exist, "
                "and the URL says create=false: create it (with a redrive policy to the "
                "-dlq queue) or drop create=false"
            )
        dlq = found[dlq_name] or await self._create(client, dlq_name, {})
        with sdk_errors(self.where, f"reading the attributes of {dlq_name}"):
            arn = (await client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
        wanted = {
            "MessageRetentionPeriod": str(self.settings.message_retention),
            "RedrivePolicy": f'{{"deadLetterTargetArn":"{arn}",'
            f'"maxReceiveCount":"{self.settings.max_receive_count}"}}',
        }
        queue = found[name]
        if queue is None:
            queue = await self._create(
                client, name, {**wanted, "VisibilityTimeout": str(DEFAULT_VISIBILITY)}
            )
        else:
            await self._check(client, name, queue, wanted)
        return _Urls(queue, dlq)

    async def _find(self, client: Any, name: str) -> str | None:
        with sdk_errors(self.where, f"looking up queue {name}"):
            try:
                return str((await client.get_queue_url(QueueName=name))["QueueUrl"])
            except ClientError as exc:
                if error_code(exc) in _MISSING_QUEUE:
                    return None
                raise

    async def _create(self, client: Any, name: str, attributes: dict[str, str]) -> str:
        if name.endswith("-dlq"):
            attributes = {"MessageRetentionPeriod": str(SQS_MAX_RETENTION)}
        with sdk_errors(self.where, f"creating queue {name}"):
            try:
                reply = await client.create_queue(QueueName=name, Attributes=attributes)
            except ClientError as exc:
                if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                    raise
                # Created meanwhile (by another process) with other attributes: use it.
                url = str((await client.get_queue_url(QueueName=name))["QueueUrl"])
                await self._check(client, name, url, attributes)
                return url
        log.info("created SQS queue", extra={"queue": name})
        return str(reply["QueueUrl"])

    async def _check(self, client: Any, name: str, url: str, wanted: dict[str, str]) -> None:
        """An existing queue must keep messages as long as results are kept, and dead-letter
        to chute's DLQ: fix it when chute manages the queues, else say so once in the log."""
        if not wanted:
            return
        with sdk_errors(self.where, f"reading the attributes of {name}"):
            have = (
                await client.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted))
            ).get("Attributes", {})
        short = int(have.get("MessageRetentionPeriod", "0")) < int(
            wanted.get("MessageRetentionPeriod", "0")
        )
        no_redrive = "RedrivePolicy" in wanted and "RedrivePolicy" not in have
        if not (short or no_redrive):
            return
        if not self.settings.create:
            log.warning(
                "SQS queue keeps messages shorter than results, or has no redrive policy",
                extra={"queue": name, "have": have, "wanted": wanted},
            )
            return
        with sdk_errors(self.where, f"updating the attributes of {name}"):
            await client.set_queue_attributes(QueueUrl=url, Attributes=wanted)

    # -- sending and receiving -------------------------------------------------------------

    async def send(self, api: str, request_id: str, *, delay: float = 0.0) -> None:
        await self._send(api, request_id, delay=delay)

    async def _send(
        self, api: str, request_id: str, *, delay: float = 0.0, attempts: int = 0
    ) -> None:
        validate_request_id(request_id)
        queue, _ = await self.queue_urls(api)
        args: dict[str, Any] = {"QueueUrl": queue, "MessageBody": request_id}
        if delay > 0:
            args["DelaySeconds"] = _seconds(delay, low=0, high=MAX_DELAY, what="send delay")
        if attempts:
            args["MessageAttributes"] = {
                ATTR_ATTEMPTS: {"DataType": "Number", "StringValue": str(attempts)}
            }
        client = await self._clients.get()
        with sdk_errors(self.where, f"sending {request_id} to {api}"):
            await client.send_message(**args)

    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Delivery]:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        visibility = _seconds(lease, low=1, high=MAX_VISIBILITY, what="lease")
        queue, _ = await self.queue_urls(api)
        client = await self._clients.get()
        end = time.monotonic() + max(0.0, wait)
        while True:
            remaining = end - time.monotonic()
            # Whole seconds, rounded up: a receive never returns early with messages unseen.
            poll = min(MAX_WAIT, math.ceil(remaining)) if remaining > 0 else 0
            started = time.monotonic()
            with sdk_errors(self.where, f"receiving from {api}"):
                reply = await client.receive_message(
                    QueueUrl=queue,
                    MaxNumberOfMessages=min(max_messages, MAX_BATCH),
                    WaitTimeSeconds=poll,
                    VisibilityTimeout=visibility,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=[ATTR_ATTEMPTS],
                )
            messages = reply.get("Messages", [])
            if messages:
                return [self._delivery(api, m, started, visibility) for m in messages]
            if end - time.monotonic() <= 0.05:
                return []

    def _delivery(
        self, api: str, message: dict[str, Any], started: float, visibility: int
    ) -> Delivery:
        receipt = str(message["ReceiptHandle"])
        received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        before = int(_number(message.get("MessageAttributes", {}), ATTR_ATTEMPTS) or 0)
        self._leases.held(receipt, started, visibility)
        return Delivery(api, str(message["Body"]), before + received, receipt)

    # -- leases ----------------------------------------------------------------------------

    def _check_lease(self, delivery: Delivery) -> None:
        state = self._leases.state(delivery.receipt)
        if state in (LeaseState.LAPSED, LeaseState.SETTLED):
            raise self._lost(delivery, "lapsed" if state is LeaseState.LAPSED else "settled")

    def _lost(self, delivery: Delivery, why: str) -> LeaseLost:
        return LeaseLost(
            f"request {delivery.request_id} of API {delivery.api}: the lease of attempt "
            f"{delivery.attempt} is gone ({why})"
        )

    async def _holder_call(self, delivery: Delivery, doing: str, call: Any, **args: Any) -> None:
        """Call SQS with the delivery's receipt handle; a stale handle means LeaseLost."""
        self._check_lease(delivery)
        queue, _ = await self.queue_urls(delivery.api)
        with sdk_errors(self.where, f"{doing} {delivery.request_id} in {delivery.api}"):
            try:
                await call(QueueUrl=queue, ReceiptHandle=delivery.receipt, **args)
            except ClientError as exc:
                message = str(exc.response.get("Error", {}).get("Message", ""))
                if error_code(exc) in _STALE_HANDLE and (
                    error_code(exc) != "InvalidParameterValue" or "ReceiptHandle" in message
                ):
                    self._leases.settled(delivery.receipt)
                    raise self._lost(delivery, f"SQS: {error_code(exc)}") from exc
                raise

    async def extend(self, delivery: Delivery, lease: float) -> None:
        visibility = _seconds(lease, low=1, high=MAX_VISIBILITY, what="lease")
        client = await self._clients.get()
        started = time.monotonic()
        await self._holder_call(
            delivery, "extending the lease of", client.change_message_visibility,
            VisibilityTimeout=visibility,
        )  # fmt: skip
        self._leases.held(delivery.receipt, started, visibility)

    async def ack(self, delivery: Delivery) -> None:
        client = await self._clients.get()
        await self._holder_call(delivery, "acking", client.delete_message)
        self._leases.settled(delivery.receipt)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """DeleteMessageBatch, 10 entries per call, per API; an entry SQS refuses as a stale
        handle is a lost lease (False), any other refusal is retried alone by :meth:`ack`."""
        acked = [False] * len(deliveries)
        live: dict[str, list[int]] = {}
        for i, d in enumerate(deliveries):
            if self._leases.state(d.receipt) not in (LeaseState.LAPSED, LeaseState.SETTLED):
                live.setdefault(d.api, []).append(i)
        client = await self._clients.get()
        for api, indices in live.items():
            queue, _ = await self.queue_urls(api)
            for start in range(0, len(indices), MAX_BATCH):
                chunk = indices[start : start + MAX_BATCH]
                entries = [{"Id": str(i), "ReceiptHandle": deliveries[i].receipt} for i in chunk]
                with sdk_errors(self.where, f"acking {len(chunk)} messages in {api}"):
                    reply = await client.delete_message_batch(QueueUrl=queue, Entries=entries)
                for done in reply.get("Successful", []):
                    i = int(done["Id"])
                    self._leases.settled(deliveries[i].receipt)
                    acked[i] = True
                for failed in reply.get("Failed", []):
                    i = int(failed["Id"])
                    code, message = failed.get("Code"), str(failed.get("Message", ""))
                    if code in _STALE_HANDLE and (
                        code != "InvalidParameterValue" or "ReceiptHandle" in message
                    ):
                        self._leases.settled(deliveries[i].receipt)
                        continue
                    try:
                        await self.ack(deliveries[i])
                    except LeaseLost:
                        continue
                    acked[i] = True
        return acked

    async def release(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        # The message stays where it is, hidden for ``delay``: SQS counts it as in flight
        # meanwhile, and its receive count (the next attempt) goes on.
        visibility = _seconds(delay, low=0, high=MAX_VISIBILITY, what="release delay")
        client = await self._clients.get()
        await self._holder_call(
            delivery, "releasing", client.change_message_visibility, VisibilityTimeout=visibility
        )
        self._leases.settled(delivery.receipt)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._check_lease(delivery)
        _, dlq = await self.queue_urls(delivery.api)
        attributes: dict[str, Any] = {
            ATTR_ATTEMPTS: {"DataType": "Number", "StringValue": str(delivery.attempt)},
            ATTR_DEAD_AT: {"DataType": "Number", "StringValue": repr(now())},
        }
        if reason:  # SQS refuses empty attribute values
            attributes[ATTR_REASON] = {"DataType": "String", "StringValue": reason[:MAX_REASON]}
        client = await self._clients.get()
        # Copy first, delete second: a failure in between leaves a duplicate dead letter (its
        # requeue is fenced by the store), never a lost one.
        with sdk_errors(self.where, f"dead-lettering {delivery.request_id} of {delivery.api}"):
            await client.send_message(
                QueueUrl=dlq, MessageBody=delivery.request_id, MessageAttributes=attributes
            )
        await self._holder_call(delivery, "removing", client.delete_message)
        self._leases.settled(delivery.receipt)

    # -- dead letters ----------------------------------------------------------------------

    async def _scan_dead(self, api: str) -> list[ScannedLetter]:
        """Receive every dead letter of ``api`` (up to scan_limit), hiding each for
        SCAN_VISIBILITY seconds; the caller acts on them or lets them go (:meth:`_let_go`)."""
        _, dlq = await self.queue_urls(api)
        client = await self._clients.get()
        doing = f"reading the dead letters of {api}"
        with sdk_errors(self.where, doing):
            counts = (
                await client.get_queue_attributes(
                    QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
                )
            )["Attributes"]
        expected = int(counts.get("ApproximateNumberOfMessages", "0"))
        seen: dict[str, ScannedLetter] = {}
        confirmed = False
        while len(seen) < self.scan_limit:
            # Short polls while the count says more are there; one long poll (which asks every
            # SQS server, where a short poll samples some) to confirm the end.
            poll = 0 if len(seen) < expected else 1
            with sdk_errors(self.where, doing):
                reply = await client.receive_message(
                    QueueUrl=dlq,
                    MaxNumberOfMessages=MAX_BATCH,
                    WaitTimeSeconds=poll,
                    VisibilityTimeout=SCAN_VISIBILITY,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=[ATTR_REASON, ATTR_ATTEMPTS, ATTR_DEAD_AT],
                )
            messages = reply.get("Messages", [])
            fresh = [m for m in messages if m["MessageId"] not in seen]
            for message in fresh:
                seen[message["MessageId"]] = self._scanned(api, message)
            if not fresh:
                if confirmed or len(seen) >= expected:
                    break
                confirmed = True
        return list(seen.values())

    def _scanned(self, api: str, message: dict[str, Any]) -> ScannedLetter:
        attributes = message.get("MessageAttributes", {})
        system = message.get("Attributes", {})
        sent_at = int(system.get("SentTimestamp", "0")) / 1000
        reason = attributes.get(ATTR_REASON, {}).get("StringValue")
        attempts = _number(attributes, ATTR_ATTEMPTS)
        if attempts is None:  # moved here by the redrive policy, not by chute
            attempts = float(int(system.get("ApproximateReceiveCount", "1")) - 1)
            reason = reason or "SQS redrive policy: delivered too many times (maxReceiveCount)"
        dead_at = _number(attributes, ATTR_DEAD_AT) or sent_at
        letter = DeadLetter(api, str(message["Body"]), reason or "", int(attempts), dead_at)
        return ScannedLetter(letter, str(message["ReceiptHandle"]), sent_at)

    async def _batch(self, api: str, call: str, entries: list[dict[str, Any]]) -> None:
        _, dlq = await self.queue_urls(api)
        client = await self._clients.get()
        for start in range(0, len(entries), MAX_BATCH):
            chunk = [{"Id": str(i), **e} for i, e in enumerate(entries[start : start + MAX_BATCH])]
            with sdk_errors(self.where, f"{call} on the dead letters of {api}"):
                reply = await getattr(client, call)(QueueUrl=dlq, Entries=chunk)
            if reply.get("Failed"):
                raise BackendError(f"{self.where}: {call} failed for {reply['Failed']}")

    async def _let_go(self, api: str, scanned: list[ScannedLetter]) -> None:
        entries = [{"ReceiptHandle": s.handle, "VisibilityTimeout": 0} for s in scanned]
        await self._batch(api, "change_message_visibility_batch", entries)

    async def _remove(self, api: str, scanned: list[ScannedLetter]) -> None:
        await self._batch(
            api, "delete_message_batch", [{"ReceiptHandle": s.handle} for s in scanned]
        )

    async def _resend(self, api: str, scanned: list[ScannedLetter]) -> None:
        for s in scanned:
            await self._send(api, s.letter.request_id, attempts=s.letter.attempts)

    # -- depth and health ------------------------------------------------------------------

    async def depth(self, api: str) -> QueueDepth:
        queue, dlq = await self.queue_urls(api)
        client = await self._clients.get()
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesDelayed",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        counts: dict[str, dict[str, str]] = {}

        async def read(url: str) -> None:
            with sdk_errors(self.where, f"reading the depth of {api}"):
                reply = await client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
            counts[url] = reply.get("Attributes", {})

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, queue)
            tg.start_soon(read, dlq)
        main, dead = counts[queue], counts[dlq]
        return QueueDepth(
            queued=int(main.get(names[0], 0)) + int(main.get(names[1], 0)),
            in_flight=int(main.get(names[2], 0)),
            dead=sum(int(dead.get(n, 0)) for n in names),
            delayed=int(main.get(names[1], 0)),
        )

    async def ping(self) -> None:
        client = await self._clients.get()
        with sdk_errors(self.where, "ping"):
            await client.list_queues(QueueNamePrefix=self.settings.prefix, MaxResults=1)

    async def aclose(self) -> None:
        await self._clients.aclose()
