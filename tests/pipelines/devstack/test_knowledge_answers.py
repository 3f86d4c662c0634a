"""The default topology answers an informational question from the help center, end to end: sf.ingress in, a
real worker process with the knowledge base in PostgreSQL+pgvector, the cited answer out on sf.outbound."""

from __future__ import annotations

import json

from tests.support.stream import produce_messages, raw_message, read_answers


def test_an_informational_question_comes_back_with_a_help_center_citation(broker, workers, help_center_dsn):
    workers.start(DATABASE_URL=help_center_dsn)
    question = raw_message("kb-1", "webchat", "web-kb", "how long does express delivery take?", "kb-customer")
    produce_messages(broker.bootstrap, [question])

    records = read_answers(broker.bootstrap, {"kb-1"}, timeout_s=60)

    (reply,) = [json.loads(r.value) for r in records if r.topic == "sf.outbound"]
    assert "1 to 2 business days" in reply["text"]
    citation = "Source: Delivery options at checkout (https://help.example-shop.com/shipping/delivery-options)"
    assert reply["text"].endswith(citation)
