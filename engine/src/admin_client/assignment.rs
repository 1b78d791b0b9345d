//! The consumer protocol's assignment, as DescribeGroups returns it in
//! `member_assignment`.
//!
//! ```text
//! version i16 | assigned_partitions: [topic string | partitions [i32]] | user_data bytes (v1+) ...
//! ```
//!
//! The consumer protocol only ever appends fields, so a reader may parse a
//! newer version with the newest layout it knows (Kafka's own clients do
//! the same). An empty byte string is a member that has joined but not
//! yet been given its assignment.

use super::TopicPartition;
use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::{Decodable, Message};

/// The partitions in an encoded assignment, sorted.
pub fn decode(bytes: &Bytes) -> Result<Vec<TopicPartition>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(format!("{} bytes, too short for a version", bytes.len()));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!("negative version {version}"));
    }
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let assignment =
        ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| e.to_string())?;
    let mut partitions: Vec<TopicPartition> = assignment
        .assigned_partitions
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic.to_string();
            t.partitions
                .into_iter()
                .map(move |p| TopicPartition::new(topic.clone(), p))
        })
        .collect();
    partitions.sort();
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as WireTp;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encoded(version: i16) -> Bytes {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            WireTp::default()
                .with_topic(TopicName(StrBytes::from_static_str("b")))
                .with_partitions(vec![2, 0]),
            WireTp::default()
                .with_topic(TopicName(StrBytes::from_static_str("a")))
                .with_partitions(vec![1]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        a.encode(&mut buf, version.min(3)).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_and_sorts() {
        for version in [0, 1, 3] {
            assert_eq!(
                decode(&encoded(version)).unwrap(),
                vec![
                    TopicPartition::new("a", 1),
                    TopicPartition::new("b", 0),
                    TopicPartition::new("b", 2),
                ],
                "version {version}"
            );
        }
    }

    #[test]
    fn newer_versions_read_with_the_newest_known_layout() {
        assert_eq!(decode(&encoded(7)).unwrap().len(), 3);
    }

    #[test]
    fn empty_is_no_assignment_and_garbage_is_an_error() {
        assert_eq!(decode(&Bytes::new()).unwrap(), vec![]);
        assert!(decode(&Bytes::from_static(&[0])).is_err());
        assert!(decode(&Bytes::from_static(&[0xff, 0xff, 0, 0])).is_err());
        assert!(decode(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }
}
