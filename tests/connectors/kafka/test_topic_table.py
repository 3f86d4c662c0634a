"""The read-only topic mirror, against a real tansu broker."""

from __future__ import annotations

import pytest

from connectors.kafka import TopicPlan, create_topics
from connectors.kafka.topic_table import ReadOnlyTable, TopicTable
from schemas import ContactAddress, CustomerProfile, contact_key
from tests.support.stream import produce


def profile(customer_id: str, *contacts: tuple[str, str], tier: str = "standard") -> CustomerProfile:
    return CustomerProfile(
        customer_id=customer_id,
        contacts=[ContactAddress(channel=c, address=a) for c, a in contacts],  # type: ignore[arg-type]
        vip_tier=tier,  # type: ignore[arg-type]
    )


def test_a_mirror_is_complete_before_start_returns_and_follows_later_changes(broker):
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.profiles", 4, 1, {"cleanup.policy": "compact"})])
    first = [profile(f"c-{i}", ("email", f"User{i}@Example.com")) for i in range(50)]
    produce(broker.bootstrap, "sf.profiles", ((p.customer_id, p.to_bytes()) for p in first))

    table = TopicTable(conf, "sf.profiles", CustomerProfile).start(timeout_s=30)
    try:
        assert len(table) == 50, "start() returns only once the topic's current end is read"
        found = table.get(contact_key("email", "user7@example.com"))
        assert found is not None and found.customer_id == "c-7", "a contact address finds its customer"

        moved = profile("c-7", ("sms", "+14155550134"), tier="gold")
        produce(broker.bootstrap, "sf.profiles", [(moved.customer_id, moved.to_bytes())])
        assert table.wait_for(contact_key("sms", "+14155550134")) is not None
        assert table.get("c-7").vip_tier == "gold"  # type: ignore[union-attr]
        assert table.get(contact_key("email", "user7@example.com")) is None, "a dropped contact no longer resolves"
    finally:
        table.close()


def test_a_mirror_refuses_writes_and_skips_invalid_records(broker):
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.profiles", 1, 1, None)])
    good = profile("c-1")
    produce(broker.bootstrap, "sf.profiles", [("c-0", b"{not json"), (good.customer_id, good.to_bytes())])
    table = TopicTable(conf, "sf.profiles", CustomerProfile).start(timeout_s=30)
    try:
        assert table.get("c-1") is not None and table.get("c-0") is None
        assert table.invalid_records == 1
        with pytest.raises(ReadOnlyTable):
            table.set("c-1", good)
    finally:
        table.close()
