"""The node's consent view is bounded: withdrawn ids in memory, thread consents in an LRU
loaded from storage on demand, never guessed (issue 6, backlog memory)."""

from __future__ import annotations

from typing import Any

import pytest
from test_api import created, refer_and_deliver

from caseway.node.threads import ConsentNotLoaded, NodeConsents, erased_consent
from caseway.protocol.consent import ConsentRecord

from conftest import ApiPair, referral_request


def record(consent_id: str) -> ConsentRecord:
    return erased_consent(consent_id)  # any valid record will do for the view's mechanics


def evict_all(consents: NodeConsents) -> None:
    """Fill the LRU with unrelated threads (public API only)."""
    for i in range(consents.capacity):
        consents.record_thread(f"filler-{i}", record(f"filler-{i}"))


def test_the_view_is_bounded_and_a_miss_is_never_a_guess() -> None:
    view = NodeConsents(capacity=2)
    for name in ("t1", "t2", "t3"):
        view.record_thread(name, record(f"c-{name}"))
    assert view.held() == 2
    with pytest.raises(ConsentNotLoaded) as miss:
        view.consent_for_thread("t1")  # evicted: not "no consent"
    assert miss.value.thread_id == "t1" and "t1" not in str(miss.value)
    assert view.consent_for_thread("t3") is not None
    view.withdraw("c-t1", 5)  # withdrawals are never evicted
    for i in range(10):
        view.record_thread(f"x{i}", record(f"x{i}"))
    assert view.is_withdrawn("c-t1") and view.withdrawn_at("c-t1") == 5


def test_a_pin_outlives_eviction_and_follows_updates() -> None:
    view = NodeConsents(capacity=1)
    epoch = view.epoch
    view.pin("t1", record("c1"), epoch=epoch)
    view.record_thread("other", record("c-other"))  # evicts t1 from the LRU
    assert view.consent_for_thread("t1") == record("c1")
    view.record_erased("t1", "c1")  # an update while pinned reaches the pin
    assert view.consent_for_thread("t1").recorded_by == "erased"  # type: ignore[union-attr]
    view.unpin("t1")
    # The update is in the LRU (most recent), the pin is gone.
    assert view.consent_for_thread("t1").recorded_by == "erased"  # type: ignore[union-attr]
    view.record_thread("again", record("c-again"))
    with pytest.raises(ConsentNotLoaded):
        view.consent_for_thread("t1")


def test_a_load_that_raced_an_update_is_not_cached() -> None:
    view = NodeConsents(capacity=4)
    epoch = view.epoch
    view.record_thread("t1", record("fresh"))  # committed while the load was reading
    view.cache("t1", None, epoch=epoch)  # the stale read loses
    assert view.consent_for_thread("t1") == record("fresh")
    epoch = view.epoch
    view.record_thread("t2", record("fresh2"))
    view.pin("t3", None, epoch=epoch)  # stale epoch: used for the operation, not cached
    view.unpin("t3")
    with pytest.raises(ConsentNotLoaded):
        view.consent_for_thread("t3")
    # A first record replaces a held "no consent" answer.
    view.cache("t4", None, epoch=view.epoch)
    assert view.consent_for_thread("t4") is None
    view.record_thread("t4", record("c4"))
    assert view.consent_for_thread("t4") == record("c4")


async def test_feedback_and_info_responses_load_an_evicted_consent(api_pair: ApiPair) -> None:
    """Both sides forget the thread's consent (LRU eviction); every message that needs it
    still passes, on the sending and on the receiving side, with the right record."""
    pair = api_pair
    sent = await refer_and_deliver(pair)
    thread_id = sent["thread_id"]
    embassy = pair.embassy.harness.running.service
    shelter = pair.shelter.harness.running.service
    base = f"/api/v1/threads/{thread_id}"
    created(await pair.shelter.call("POST", f"{base}/accept", {"receiver_ref": "R-1"}))
    created(await pair.shelter.call("POST", f"{base}/info-requests",
                                    {"categories": ["location_return"]}))
    assert await pair.deliver() == 2
    for service in (embassy, shelter):
        evict_all(service.consents)
        assert not service.consents.holds(thread_id)
    answer = {"sections": {"location_return": {"current_country": "MY",
                                               "expected_return_date": "2026-01-30"}}}
    created(await pair.embassy.call("POST", f"{base}/info-responses", answer))
    evict_all(embassy.consents)
    evict_all(shelter.consents)
    assert await pair.deliver() == 1  # the shelter's policy loaded the consent to open it
    evict_all(shelter.consents)
    created(await pair.shelter.call("POST", f"{base}/updates",
                                    {"kind": "note", "note": "arrived"}))
    evict_all(embassy.consents)
    evict_all(shelter.consents)
    assert await pair.deliver() == 1
    for service in (embassy, shelter):
        assert service.consents.held() <= service.consents.capacity
        loaded = await service.consent_for_thread(thread_id)
        assert loaded is not None and loaded.consent_id == sent["consent_id"]
    timeline = (await pair.embassy.call("GET", f"/api/v1/cases/{sent['case_id']}")).body
    assert [m["type"] for m in timeline["messages"]] == [
        "referral", "accept", "info_request", "info_response", "update"]
    assert all(m["delivery"]["receipt"]["outcome"] == "accepted"
               for m in timeline["messages"] if m["direction"] == "out")


async def test_onward_referral_reads_an_evicted_consent(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = await refer_and_deliver(pair, referral_request())
    shelter = pair.shelter.harness.running.service
    evict_all(shelter.consents)
    record_ = await shelter.consent_for_thread(sent["thread_id"])
    assert record_ is not None and record_.consent_id == sent["consent_id"]
    evict_all(shelter.consents)
    assert await shelter.consent_for_thread("no-such-thread") is None


async def test_a_restart_warms_only_a_bounded_number_of_consents(api_pair: ApiPair) -> None:
    pair = api_pair
    sent: list[dict[str, Any]] = [await refer_and_deliver(pair) for _ in range(3)]
    await pair.shelter.harness.stop()
    await pair.shelter.harness.start()
    service = pair.shelter.harness.running.service
    assert service.consents.held() == 3  # fewer than the capacity: all warmed
    await service.load_consents(warm=1)
    evict_all(service.consents)
    await service.load_consents(warm=1)  # the most recent one only, read from storage
    assert service.consents.holds(sent[-1]["thread_id"])
    assert not service.consents.holds(sent[0]["thread_id"])
