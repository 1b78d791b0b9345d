//! A Kafka-protocol connection from this broker to another (or to
//! itself) over the inter-broker listener: plaintext, or TLS when that
//! listener is an SSL one. One request is in flight at a time; the
//! caller's task owns the connection. Replica fetchers and the
//! transaction coordinator's marker sender both speak through it.

use super::Shard;
use crate::security::link::Link;
use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::net::ToSocketAddrs;
use std::time::Duration;

/// A broker that does not answer within this is given up on.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer accepted: a Fetch answer is bounded by its request's
/// `max_bytes` (10 MiB for followers); anything near this is garbage.
const FRAME_BYTES_MAX: usize = 256 << 20;

/// One connection to a broker.
pub struct BrokerConn {
    stream: Link,
    correlation_id: i32,
    client_id: &'static str,
}

impl BrokerConn {
    /// Connects to broker `node`'s inter-broker endpoint, as the current
    /// metadata names it; None if it is unknown or does not answer.
    pub async fn connect(shard: &Shard, node: i32, client_id: &'static str) -> Option<BrokerConn> {
        let snapshot = shard.metadata();
        let b = snapshot.brokers.get(&node)?;
        let addr = (b.host.as_str(), b.port).to_socket_addrs().ok()?.next()?;
        let stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let stream = match inter_broker_tls(shard) {
            None => Link::Plain(stream),
            Some(config) => {
                let shaken = glommio::timer::timeout(CALL_TIMEOUT, async {
                    Ok(Link::tls(stream, config, &b.host).await)
                })
                .await;
                match shaken {
                    Ok(Ok(link)) => link,
                    Ok(Err(e)) => {
                        tracing::warn!(node, %addr, error = %e, "TLS handshake with a broker failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::warn!(node, %addr, "TLS handshake with a broker timed out");
                        return None;
                    }
                }
            }
        };
        Some(BrokerConn {
            stream,
            correlation_id: 0,
            client_id,
        })
    }

    /// Sends one request and reads its answer.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        req.encode(&mut buf, version)
            .map_err(|e| invalid(e.to_string()))?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > FRAME_BYTES_MAX {
                return Err(invalid(format!("answer of {len} bytes")));
            }
            let mut frame = vec![0u8; len];
            self.stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(frame)
        };
        let frame = glommio::timer::timeout(CALL_TIMEOUT, async { Ok(exchange.await?) })
            .await
            .map_err(std::io::Error::from)?;
        let mut body = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        if h.correlation_id != self.correlation_id {
            return Err(invalid("answer to another request".into()));
        }
        Resp::decode(&mut body, version).map_err(|e| invalid(e.to_string()))
    }
}

/// The client side of the inter-broker listener's TLS, if it has TLS.
fn inter_broker_tls(shard: &Shard) -> Option<std::sync::Arc<rustls::ClientConfig>> {
    let broker = &shard.broker;
    broker
        .listeners
        .iter()
        .find(|l| l.config.name == broker.inter_broker_listener)
        .and_then(|l| l.tls.as_ref())
        .and_then(|t| t.client_config())
}
