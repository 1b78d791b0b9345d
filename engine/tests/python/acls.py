"""ACLs through two admin clients against a Sluice broker with an
authorizer: kafka-python's KafkaAdminClient and confluent-kafka's
AdminClient (librdkafka) each create ACLs, list them with a filter and
delete them, and see a bad binding refused. Prints "<client> ok" for each;
exits non-zero on any mismatch."""

import sys

bootstrap = sys.argv[1]


def kafka_python():
    from kafka import KafkaAdminClient
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern,
                             ResourcePatternFilter, ResourceType)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    read = ACL("User:alice", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
               ResourcePattern(ResourceType.TOPIC, "kp-orders"))
    write = ACL("User:bob", "*", ACLOperation.WRITE, ACLPermissionType.DENY,
                ResourcePattern(ResourceType.TOPIC, "kp-",
                                ACLResourcePatternType.PREFIXED))
    result = admin.create_acls([read, write])
    assert len(result["succeeded"]) == 2 and not result["failed"], result

    everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(ResourceType.ANY, None,
                                                 ACLResourcePatternType.ANY))
    acls, error = admin.describe_acls(everything)
    assert error.errno == 0, error
    assert len(acls) == 2, acls
    # MATCH: every ACL that applies to the topic kp-orders.
    matching = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                         ResourcePatternFilter(ResourceType.TOPIC, "kp-orders",
                                               ACLResourcePatternType.MATCH))
    acls, _ = admin.describe_acls(matching)
    assert {a.principal for a in acls} == {"User:alice", "User:bob"}, acls
    alice = ACLFilter("User:alice", None, ACLOperation.ANY, ACLPermissionType.ANY,
                      ResourcePatternFilter(ResourceType.ANY, None,
                                            ACLResourcePatternType.ANY))
    acls, _ = admin.describe_acls(alice)
    assert [a.principal for a in acls] == ["User:alice"], acls

    deleted = admin.delete_acls([everything])
    (_, matched, error) = deleted[0]
    assert error.errno == 0, deleted
    assert len(matched) == 2, matched
    acls, _ = admin.describe_acls(everything)
    assert acls == [], acls
    admin.close()
    print("kafka-python ok")


def confluent():
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    group = AclBinding(ResourceType.GROUP, "ck-group", ResourcePatternType.LITERAL,
                       "User:carol", "*", AclOperation.READ, AclPermissionType.ALLOW)
    topic = AclBinding(ResourceType.TOPIC, "ck-", ResourcePatternType.PREFIXED,
                       "User:*", "10.0.0.1", AclOperation.DESCRIBE,
                       AclPermissionType.ALLOW)
    for binding, future in admin.create_acls([group, topic]).items():
        future.result(timeout=60)
    # The CLUSTER resource has one name: another is refused.
    bad = AclBinding(ResourceType.BROKER, "not-kafka-cluster",
                     ResourcePatternType.LITERAL, "User:carol", "*",
                     AclOperation.ALTER, AclPermissionType.ALLOW)
    try:
        admin.create_acls([bad])[bad].result(timeout=60)
        raise AssertionError("a CLUSTER ACL with a wrong name was accepted")
    except KafkaException as e:
        assert "kafka-cluster" in str(e), e

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                                  None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    found = admin.describe_acls(everything).result(timeout=60)
    assert sorted(b.name for b in found) == ["ck-", "ck-group"], found
    groups = AclBindingFilter(ResourceType.GROUP, None, ResourcePatternType.ANY,
                              None, None, AclOperation.ANY, AclPermissionType.ANY)
    deleted = admin.delete_acls([groups])[groups].result(timeout=60)
    assert [b.name for b in deleted] == ["ck-group"], deleted
    left = admin.describe_acls(everything).result(timeout=60)
    assert [(b.name, b.host) for b in left] == [("ck-", "10.0.0.1")], left
    admin.delete_acls([everything])[everything].result(timeout=60)
    print("confluent-kafka ok")


kafka_python()
confluent()
