//! Kafka's wire error codes. The numbers are Kafka's (see the protocol
//! guide's error table); only the codes Sluice can return are listed.

/// An error code as it travels on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ErrorCode {
    UnknownServerError = -1,
    None = 0,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    NetworkException = 13,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopicException = 17,
    RecordListTooLarge = 18,
    NotEnoughReplicas = 19,
    NotEnoughReplicasAfterAppend = 20,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidCommitOffsetSize = 28,
    TopicAuthorizationFailed = 29,
    GroupAuthorizationFailed = 30,
    ClusterAuthorizationFailed = 31,
    UnsupportedForMessageFormat = 43,
    InvalidTimestamp = 32,
    UnsupportedSaslMechanism = 33,
    IllegalSaslState = 34,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    NotController = 41,
    InvalidRequest = 42,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    DuplicateSequenceNumber = 46,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    InvalidProducerIdMapping = 49,
    InvalidTransactionTimeout = 50,
    ConcurrentTransactions = 51,
    TransactionCoordinatorFenced = 52,
    TransactionalIdAuthorizationFailed = 53,
    SecurityDisabled = 54,
    OperationNotAttempted = 55,
    KafkaStorageError = 56,
    LogDirNotFound = 57,
    SaslAuthenticationFailed = 58,
    UnknownProducerId = 59,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnsupportedCompressionType = 76,
    StaleBrokerEpoch = 77,
    OffsetNotAvailable = 78,
    MemberIdRequired = 79,
    PreferredLeaderNotAvailable = 80,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    EligibleLeadersNotAvailable = 83,
    ElectionNotNeeded = 84,
    NoReassignmentInProgress = 85,
    GroupSubscribedToTopic = 86,
    InvalidRecord = 87,
    UnstableOffsetCommit = 88,
    ProducerFenced = 90,
    ResourceNotFound = 91,
    DuplicateResource = 92,
    UnacceptableCredential = 93,
    InvalidUpdateVersion = 95,
    UnknownTopicId = 100,
    InconsistentTopicId = 103,
    InconsistentClusterId = 104,
    TransactionalIdNotFound = 105,
    IneligibleReplica = 107,
    FencedMemberEpoch = 110,
    UnreleasedInstanceId = 111,
    UnsupportedAssignor = 112,
    StaleMemberEpoch = 113,
    MismatchedEndpointType = 114,
    UnsupportedEndpointType = 115,
    TransactionAbortable = 120,
    InvalidRegularExpression = 128,
    RebootstrapRequired = 129,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// Whether a client may retry the request unchanged: exactly the
    /// codes whose exception in Kafka's `Errors.java` is a
    /// `RetriableException` (directly or through `InvalidMetadataException`).
    /// Several of them only say "refresh first" (metadata, the fetch
    /// session, the controller), which a retry loop does by asking again.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::CorruptMessage
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NetworkException
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::NotController
                | ErrorCode::KafkaStorageError
                | ErrorCode::FetchSessionIdNotFound
                | ErrorCode::InvalidFetchSessionEpoch
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::OffsetNotAvailable
                | ErrorCode::PreferredLeaderNotAvailable
                | ErrorCode::EligibleLeadersNotAvailable
                | ErrorCode::ElectionNotNeeded
                | ErrorCode::UnknownTopicId
                | ErrorCode::InconsistentTopicId
                | ErrorCode::UnstableOffsetCommit
        )
    }

    /// Maps a wire code back to the enum; unknown codes become
    /// `UnknownServerError`.
    pub fn from_code(code: i16) -> ErrorCode {
        ALL.iter()
            .copied()
            .find(|e| e.code() == code)
            .unwrap_or(ErrorCode::UnknownServerError)
    }
}

const ALL: [ErrorCode; 96] = [
    ErrorCode::UnknownServerError,
    ErrorCode::None,
    ErrorCode::OffsetOutOfRange,
    ErrorCode::CorruptMessage,
    ErrorCode::UnknownTopicOrPartition,
    ErrorCode::InvalidFetchSize,
    ErrorCode::LeaderNotAvailable,
    ErrorCode::NotLeaderOrFollower,
    ErrorCode::RequestTimedOut,
    ErrorCode::MessageTooLarge,
    ErrorCode::OffsetMetadataTooLarge,
    ErrorCode::NetworkException,
    ErrorCode::CoordinatorLoadInProgress,
    ErrorCode::CoordinatorNotAvailable,
    ErrorCode::NotCoordinator,
    ErrorCode::InvalidTopicException,
    ErrorCode::RecordListTooLarge,
    ErrorCode::NotEnoughReplicas,
    ErrorCode::NotEnoughReplicasAfterAppend,
    ErrorCode::InvalidRequiredAcks,
    ErrorCode::IllegalGeneration,
    ErrorCode::InconsistentGroupProtocol,
    ErrorCode::InvalidGroupId,
    ErrorCode::UnknownMemberId,
    ErrorCode::InvalidSessionTimeout,
    ErrorCode::RebalanceInProgress,
    ErrorCode::InvalidCommitOffsetSize,
    ErrorCode::TopicAuthorizationFailed,
    ErrorCode::GroupAuthorizationFailed,
    ErrorCode::ClusterAuthorizationFailed,
    ErrorCode::UnsupportedForMessageFormat,
    ErrorCode::InvalidTimestamp,
    ErrorCode::UnsupportedSaslMechanism,
    ErrorCode::IllegalSaslState,
    ErrorCode::UnsupportedVersion,
    ErrorCode::TopicAlreadyExists,
    ErrorCode::InvalidPartitions,
    ErrorCode::InvalidReplicationFactor,
    ErrorCode::InvalidReplicaAssignment,
    ErrorCode::InvalidConfig,
    ErrorCode::NotController,
    ErrorCode::InvalidRequest,
    ErrorCode::PolicyViolation,
    ErrorCode::OutOfOrderSequenceNumber,
    ErrorCode::DuplicateSequenceNumber,
    ErrorCode::InvalidProducerEpoch,
    ErrorCode::InvalidTxnState,
    ErrorCode::InvalidProducerIdMapping,
    ErrorCode::InvalidTransactionTimeout,
    ErrorCode::ConcurrentTransactions,
    ErrorCode::TransactionCoordinatorFenced,
    ErrorCode::TransactionalIdAuthorizationFailed,
    ErrorCode::SecurityDisabled,
    ErrorCode::OperationNotAttempted,
    ErrorCode::KafkaStorageError,
    ErrorCode::LogDirNotFound,
    ErrorCode::SaslAuthenticationFailed,
    ErrorCode::UnknownProducerId,
    ErrorCode::NonEmptyGroup,
    ErrorCode::GroupIdNotFound,
    ErrorCode::FetchSessionIdNotFound,
    ErrorCode::InvalidFetchSessionEpoch,
    ErrorCode::FencedLeaderEpoch,
    ErrorCode::UnknownLeaderEpoch,
    ErrorCode::UnsupportedCompressionType,
    ErrorCode::StaleBrokerEpoch,
    ErrorCode::OffsetNotAvailable,
    ErrorCode::MemberIdRequired,
    ErrorCode::PreferredLeaderNotAvailable,
    ErrorCode::GroupMaxSizeReached,
    ErrorCode::FencedInstanceId,
    ErrorCode::EligibleLeadersNotAvailable,
    ErrorCode::ElectionNotNeeded,
    ErrorCode::NoReassignmentInProgress,
    ErrorCode::GroupSubscribedToTopic,
    ErrorCode::InvalidRecord,
    ErrorCode::UnstableOffsetCommit,
    ErrorCode::ProducerFenced,
    ErrorCode::ResourceNotFound,
    ErrorCode::DuplicateResource,
    ErrorCode::UnacceptableCredential,
    ErrorCode::InvalidUpdateVersion,
    ErrorCode::UnknownTopicId,
    ErrorCode::InconsistentTopicId,
    ErrorCode::InconsistentClusterId,
    ErrorCode::TransactionalIdNotFound,
    ErrorCode::IneligibleReplica,
    ErrorCode::FencedMemberEpoch,
    ErrorCode::UnreleasedInstanceId,
    ErrorCode::UnsupportedAssignor,
    ErrorCode::StaleMemberEpoch,
    ErrorCode::MismatchedEndpointType,
    ErrorCode::UnsupportedEndpointType,
    ErrorCode::TransactionAbortable,
    ErrorCode::InvalidRegularExpression,
    ErrorCode::RebootstrapRequired,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for e in ALL {
            assert_eq!(ErrorCode::from_code(e.code()), e);
        }
        assert_eq!(ErrorCode::from_code(9999), ErrorCode::UnknownServerError);
    }

    /// The variants as written in this file's `enum ErrorCode`, read from
    /// the source so that the check below does not rest on `ALL`.
    fn declared_variants() -> Vec<(String, i16)> {
        let source = include_str!("error_code.rs");
        let start = source.find("pub enum ErrorCode {").expect("the enum");
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|l| {
                let (name, code) = l.trim_end_matches(',').split_once(" = ").expect(l);
                (name.to_string(), code.parse().expect(l))
            })
            .collect()
    }

    /// `ALL` lists every variant of the enum once, so `from_code` knows
    /// every code we can send.
    #[test]
    fn all_lists_every_variant_once() {
        let declared = declared_variants();
        let listed: Vec<(String, i16)> = ALL.iter().map(|e| (format!("{e:?}"), e.code())).collect();
        let mut declared_sorted = declared.clone();
        declared_sorted.sort();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(listed_sorted, declared_sorted, "ALL against the enum");
        let mut codes: Vec<i16> = declared.iter().map(|(_, c)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), declared.len(), "two variants share a code");
    }

    /// Each code is Kafka's number for the error of that name, as the
    /// `kafka-protocol` crate (generated from Kafka's error table) has it:
    /// a variant with a wrong number maps to a differently named Kafka
    /// error, or to none. It found `InvalidUpdateVersion` sent as 108,
    /// which is Kafka's NEW_LEADER_ELECTED, instead of 95, so a stale
    /// AlterPartition was refused with the wrong error.
    #[test]
    fn codes_are_kafkas_numbers() {
        use kafka_protocol::error::ResponseError;
        for e in ALL {
            let ours = format!("{e:?}");
            match ResponseError::try_from_code(e.code()) {
                None => assert_eq!(e, ErrorCode::None, "only NONE is code 0"),
                Some(ResponseError::Unknown(code)) => {
                    panic!("{ours} = {code} is not a Kafka error code")
                }
                Some(kafka) => assert_eq!(
                    format!("{kafka:?}"),
                    ours,
                    "code {} is Kafka's {kafka:?}, not {ours}",
                    e.code()
                ),
            }
        }
    }

    /// Every code is retriable exactly when Kafka says so (the
    /// `kafka-protocol` crate's table, generated from `Errors.java`). A
    /// code we call final that Kafka retries makes our clients give up
    /// where Kafka's would ask again; it found FETCH_SESSION_ID_NOT_FOUND,
    /// INVALID_FETCH_SESSION_EPOCH, NOT_CONTROLLER,
    /// PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
    /// ELECTION_NOT_NEEDED and INCONSISTENT_TOPIC_ID marked final.
    #[test]
    fn retriable_codes_are_kafkas() {
        use kafka_protocol::error::ResponseError;
        let mut wrong = Vec::new();
        for e in ALL {
            let kafka = match ResponseError::try_from_code(e.code()) {
                None => false,
                Some(k) => k.is_retriable(),
            };
            if e.is_retriable() != kafka {
                wrong.push(format!("{e:?}: ours {}, Kafka's {kafka}", e.is_retriable()));
            }
        }
        assert!(wrong.is_empty(), "retriable flags differ: {wrong:#?}");
    }
}
