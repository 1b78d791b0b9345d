//! One blocking connection to one broker.
//!
//! ```text
//! request:  length i32 | request header v1/v2 | body
//! response: length i32 | response header v0/v1 | body
//! ```
//!
//! Requests go one at a time and each waits for its answer, so the
//! correlation id only guards against a confused peer. On connect the
//! broker's API version ranges are fetched (ApiVersions v3, which every
//! broker since Kafka 2.4 answers); each later request uses the highest
//! version both this client and the broker know.

use super::error::{AdminError, BrokerRange};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_protocol::frame::{payload_len, FRAME_HEADER_SIZE};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response accepted. Group and offset listings of even large
/// clusters stay in single-digit MiB; anything bigger is a confused peer.
pub const RESPONSE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// The `client.id` sent with every request.
const CLIENT_ID: &str = "sluice-admin";

/// The versions this client encodes correctly with the fields it sets.
/// The lower bounds skip versions whose shape the client does not build:
/// Metadata v0 reads an empty topic list as "all topics", OffsetFetch v1
/// cannot ask for all of a group's partitions.
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::OffsetFetch, 2, 7),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// The highest version inside both inclusive ranges.
pub fn pick_version(client: (i16, i16), broker: Option<(i16, i16)>) -> Option<i16> {
    let (broker_min, broker_max) = broker?;
    let version = client.1.min(broker_max);
    (version >= client.0 && version >= broker_min).then_some(version)
}

/// A connection with the broker's version ranges.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    next_correlation_id: i32,
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (HOST:PORT) and fetches its API versions.
    /// `timeout` bounds the connect and every later read and write.
    pub fn open(addr: &str, timeout: Duration) -> Result<Connection, AdminError> {
        let stream = connect(addr, timeout)?;
        let io = |source| AdminError::Io {
            addr: addr.to_string(),
            api: ApiKey::ApiVersions,
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            next_correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = conn.send(3, &request)?;
        if response.error_code != 0 {
            return Err(AdminError::broker(
                ApiKey::ApiVersions,
                response.error_code,
                None,
            ));
        }
        for range in response.api_keys {
            conn.broker_versions
                .insert(range.api_key, (range.min_version, range.max_version));
        }
        Ok(conn)
    }

    /// Sends `request` at the highest version both sides know.
    pub fn call<R: Request>(&mut self, request: &R) -> Result<R::Response, AdminError> {
        let version = self.version(api_key(R::KEY))?;
        self.send(version, request)
    }

    /// Sends `request` at the highest version both sides know, after
    /// `adjust` has set the fields that depend on the version.
    pub fn call_with<R: Request>(
        &mut self,
        request: R,
        adjust: impl FnOnce(R, i16) -> R,
    ) -> Result<R::Response, AdminError> {
        let version = self.version(api_key(R::KEY))?;
        let request = adjust(request, version);
        self.send(version, &request)
    }

    fn version(&self, api: ApiKey) -> Result<i16, AdminError> {
        let &(_, client_min, client_max) = CLIENT_VERSIONS
            .iter()
            .find(|(key, _, _)| *key == api)
            .expect("every API this client sends is listed in CLIENT_VERSIONS");
        let broker = self.broker_versions.get(&(api as i16)).copied();
        pick_version((client_min, client_max), broker).ok_or_else(|| AdminError::Unsupported {
            addr: self.addr.clone(),
            api,
            client_min,
            client_max,
            broker: BrokerRange(broker),
        })
    }

    /// Frames, sends and waits for the answer to one request.
    fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response, AdminError> {
        let api = api_key(R::KEY);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(version, correlation_id, request)?;
        self.stream
            .write_all(&frame)
            .map_err(|source| AdminError::Io {
                addr: self.addr.clone(),
                api,
                source,
            })?;
        let mut payload = self.read_frame(api, version)?;
        let malformed = |reason: String| AdminError::Malformed {
            addr: self.addr.clone(),
            api,
            version,
            reason,
        };
        let header = ResponseHeader::decode(&mut payload, R::Response::header_version(version))
            .map_err(|e| malformed(format!("header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(malformed(format!(
                "correlation id {} answers a request this client did not send (expected {correlation_id})",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut payload, version).map_err(|e| malformed(e.to_string()))
    }

    fn read_frame(&mut self, api: ApiKey, version: i16) -> Result<Bytes, AdminError> {
        let io = |addr: &str, source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                AdminError::Closed {
                    addr: addr.to_string(),
                    api,
                    version,
                }
            } else {
                AdminError::Io {
                    addr: addr.to_string(),
                    api,
                    source,
                }
            }
        };
        let mut prefix = [0u8; FRAME_HEADER_SIZE];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| io(&self.addr, e))?;
        let len = payload_len(prefix, RESPONSE_SIZE_MAX).map_err(|source| AdminError::Frame {
            addr: self.addr.clone(),
            api,
            source,
        })?;
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| io(&self.addr, e))?;
        Ok(Bytes::from(payload))
    }
}

/// `[length][request header][body]`.
fn encode_request<R: Request>(
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<Vec<u8>, AdminError> {
    let api = api_key(R::KEY);
    let encode_error = |reason: String| AdminError::Encode {
        api,
        version,
        reason,
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; FRAME_HEADER_SIZE]);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| encode_error(e.to_string()))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| encode_error(e.to_string()))?;
    let len = i32::try_from(buf.len() - FRAME_HEADER_SIZE)
        .map_err(|_| encode_error(format!("{} bytes do not fit a frame", buf.len())))?;
    buf[..FRAME_HEADER_SIZE].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

fn api_key(key: i16) -> ApiKey {
    ApiKey::try_from(key).expect("requests built by this client have known keys")
}

/// Tries every address `addr` resolves to, within `timeout` each.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, AdminError> {
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|source| AdminError::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
    for a in resolved {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(AdminError::Connect {
        addr: addr.to_string(),
        source: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(pick_version((0, 5), Some((0, 3))), Some(3));
        assert_eq!(pick_version((0, 3), Some((0, 5))), Some(3));
        assert_eq!(pick_version((2, 7), Some((0, 1))), None);
        assert_eq!(pick_version((0, 3), Some((4, 8))), None);
        assert_eq!(pick_version((0, 3), None), None);
    }

    #[test]
    fn every_client_range_is_within_the_codec() {
        for &(api, min, max) in CLIENT_VERSIONS {
            let codec = api.valid_versions();
            assert!(min >= codec.min && max <= codec.max, "{api:?}");
            assert!(min <= max, "{api:?}");
        }
    }

    #[test]
    fn request_frames_carry_their_length() {
        let frame = encode_request(3, 7, &ApiVersionsRequest::default()).unwrap();
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // api key 18, version 3, correlation id 7
        assert_eq!(&frame[4..12], &[0, 18, 0, 3, 0, 0, 0, 7]);
    }
}
