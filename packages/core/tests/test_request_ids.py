"""Request ids are UUIDs, as Cortex's were (Envoy's x-request-id): clients parse them."""

from __future__ import annotations

import time
import uuid

from chute.gateway._controls import idempotent_id
from chute.protocol import new_request_id, validate_request_id


def test_a_new_id_is_a_uuid_version_7_with_the_submit_time() -> None:
    before = time.time_ns() // 1_000_000
    request_id = new_request_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(request_id)
    assert str(parsed) == request_id  # canonical lower-case form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after  # 48 bits of Unix milliseconds
    assert validate_request_id(request_id) == request_id


def test_ids_sort_by_time_and_keep_at_least_72_random_bits() -> None:
    first = new_request_id()
    time.sleep(0.002)
    assert new_request_id() > first
    ids = [uuid.UUID(new_request_id()).int for _ in range(2000)]
    # rand_a (12 bits) and rand_b (62 bits): every one of the 74 bits takes both values.
    random_mask = (0xFFF << 64) | 0x3FFF_FFFF_FFFF_FFFF
    varying = 0
    for value in ids:
        varying |= (value ^ ids[0]) & random_mask
    assert bin(varying).count("1") == 74


def test_an_idempotent_id_is_a_stable_uuid_per_api_and_key() -> None:
    request_id = idempotent_id("classifier", "order-1234")
    parsed = uuid.UUID(request_id)
    assert parsed.version == 8
    assert parsed.variant == uuid.RFC_4122
    assert idempotent_id("classifier", "order-1234") == request_id
    assert idempotent_id("other", "order-1234") != request_id
    assert idempotent_id("classifier", "order-1235") != request_id


def test_ids_from_earlier_versions_stay_valid() -> None:
    for old in (
        "018f2b3c4d5e9a8b7c6d5e4f3a2b1c0d9e8f7a6b",
        "idem-vQ3l1t0mOQk0XnFqVw2V8S0B9T9pkJw7z0a2mXcJ6xE",
    ):
        assert validate_request_id(old) == old
