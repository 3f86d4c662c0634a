"""Kafka clients (confluent-kafka): topic administration, producers and reply readers.

Producers use the murmur2 partitioner, the one Java clients and aiokafka (inside faust) use,
so a record keyed here lands in the partition whose faust table holds that key's state.
"""

from connectors.kafka._admin import GroupLag, TopicPlan, consumer_group_lag, create_topics, wait_for_broker
from connectors.kafka._consumer import (
    BackgroundReader,
    KafkaRecord,
    consume_all,
    consumer_config,
    dead_letter_of,
    make_reader,
)
from connectors.kafka._producer import AsyncProducer, DeliveryRejected, make_producer

__all__ = [
    "AsyncProducer",
    "BackgroundReader",
    "DeliveryRejected",
    "GroupLag",
    "KafkaRecord",
    "TopicPlan",
    "consume_all",
    "consumer_config",
    "consumer_group_lag",
    "create_topics",
    "dead_letter_of",
    "make_producer",
    "make_reader",
    "wait_for_broker",
]
