"""The local test broker's cluster ids are ones Kafka's storage tool accepts."""

from chainloom.infra.kafka_broker import _cluster_id


def test_cluster_ids_never_look_like_an_option():
    ids = [_cluster_id() for _ in range(5000)]  # about 78 of 5,000 random ids start with "-"
    assert all(not i.startswith("-") and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
