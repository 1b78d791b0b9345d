//! One client connection: a reader that reads and handles requests one at
//! a time, and a writer that sends their answers in request order.
//!
//! Most answers are ready when their handler returns. An acks=all Produce
//! returns once its batches are appended, with its answer still waiting for
//! the in-sync replicas ([`Reply::Later`]); the reader goes on with the next
//! request meanwhile. Kafka mutes a connection until each answer is out, so
//! a client's pipelined acks=all requests there each wait a replication
//! round trip behind the one before; here they replicate together. The
//! order of appends, and of answers, is the order of requests either way.
//!
//! On a TLS listener the connection first completes a handshake within
//! [`HANDSHAKE_MAX`]; a peer that is silent, speaks plaintext, or shows a
//! certificate that does not verify is logged and closed, costing one
//! task for at most that long. After it, requests and answers pass
//! through the session ([`super::tls`]); the client's principal is its
//! certificate's subject when it showed one.
//!
//! The reader counts each request with the time it waited behind earlier
//! ones and the time its handler took; the writer adds the time from the
//! answer being ready to its last byte written
//! ([`crate::metrics::requests`]).
//!
//! Anything that makes the byte stream unreadable (a length outside the
//! limits, an unknown API key, an unsupported version, a body that does not
//! decode) is logged and closes this connection only.

use super::frame_reader::{FrameReadError, FrameReader, Receive};
use super::handlers::{self, HandlerError, Later, Reply};
use super::sasl_gate::{SaslGate, Verdict};
use super::sendfile::set_nonblocking;
use super::tls::{self as session, Outbound};
use crate::security::listeners::Served;
use crate::shard::Shard;
use futures::future::{self, Either};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use sluice_protocol::fetch_response::Part;
use sluice_protocol::frame;
use sluice_protocol::header::{parse_request_header, HeaderError};
use std::cell::Cell;
use std::io;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("bad request header: {0}")]
    Header(#[from] HeaderError),
    #[error("{0}")]
    Handler(#[from] HandlerError),
    #[error("{0}")]
    Sasl(String),
}

impl From<FrameReadError> for CloseReason {
    fn from(e: FrameReadError) -> CloseReason {
        match e {
            FrameReadError::Io(e) => CloseReason::Io(e),
            FrameReadError::Frame(e) => CloseReason::Frame(e),
        }
    }
}

/// How long a TLS client has to complete its handshake.
pub const HANDSHAKE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one connection until the peer closes it or sends garbage.
/// `active` is set whenever a request is read or an answer written (see
/// [`super::close_idle_connections`]).
pub async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    listener: &Served,
    active: &Cell<Instant>,
) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "?".to_string(), |a| a.to_string());
    // As Kafka reports a member's client host in DescribeGroups.
    let client_host = peer_addr.map_or_else(String::new, |a| format!("/{}", a.ip()));
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| set_nonblocking(stream.as_raw_fd()).map_err(Into::into))
    {
        tracing::warn!(%peer, error = %e, "socket setup failed");
        return;
    }
    let protocol = listener.config.protocol;
    let client = handlers::Client::on_listener(client_host, protocol, &listener.config.name);
    let gate = match (
        shard.broker.sasl.get(&listener.config.name),
        protocol.uses_sasl(),
    ) {
        (Some(settings), true) => Some(SaslGate::new(Arc::clone(settings), peer.clone())),
        (None, true) => {
            tracing::error!(%peer, "a SASL listener without SASL settings; closing");
            return;
        }
        (_, false) => None,
    };
    // Why the connection ends is logged before its halves are dropped,
    // which closes the socket: a client that sees the close finds the
    // reason already in the log.
    match &listener.tls {
        None => {
            let (mut reader, mut writer) = super::socket::split(stream);
            let result = run(&shard, &mut reader, &mut writer, &client, gate, active).await;
            log_close(result, &peer, peer_addr, shard.id);
        }
        Some(tls) => {
            let Some(conn) = tls_session(&mut stream, tls, &client, &peer).await else {
                return;
            };
            let (reader, writer) = super::socket::split(stream);
            let (mut reader, mut writer) = session::split(conn, reader, writer);
            let result = run(&shard, &mut reader, &mut writer, &client, gate, active).await;
            log_close(result, &peer, peer_addr, shard.id);
        }
    }
}

fn log_close(
    result: Result<(), CloseReason>,
    peer: &str,
    peer_addr: Option<std::net::SocketAddr>,
    shard: usize,
) {
    match result {
        Ok(()) => tracing::debug!(%peer, shard, "connection closed by peer"),
        Err(CloseReason::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => {
            if let Some(left_out) = warn_about(peer_addr) {
                tracing::warn!(%peer, shard, error = %e, left_out, "closing connection");
            }
        }
    }
}

/// Runs the handshake within [`HANDSHAKE_MAX`] and names the client by
/// its certificate, if it showed one. `None` (logged): close.
async fn tls_session(
    stream: &mut TcpStream,
    tls: &crate::security::tls::TlsAcceptor,
    client: &handlers::Client,
    peer: &str,
) -> Option<rustls::ServerConnection> {
    let listener = &tls.settings.listener;
    let config = tls.config();
    let shaken = glommio::timer::timeout(HANDSHAKE_MAX, async {
        Ok(session::handshake(stream, config).await)
    })
    .await;
    let conn = match shaken {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            if let Some(left_out) = warn_about(peer.parse().ok()) {
                tracing::warn!(%peer, %listener, error = %e, left_out, "TLS handshake failed; closing");
            }
            return None;
        }
        Err(_) => {
            if let Some(left_out) = warn_about(peer.parse().ok()) {
                tracing::warn!(%peer, %listener, left_out, "TLS handshake not done within {HANDSHAKE_MAX:?}; closing");
            }
            return None;
        }
    };
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        match tls.settings.mapper.principal(cert) {
            Ok(principal) => {
                tracing::debug!(%peer, %principal, "TLS client authenticated");
                *client.principal.borrow_mut() = principal;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "no principal for the client certificate; closing");
                return None;
            }
        }
    }
    Some(conn)
}

/// An answer on its way from the reader to the writer.
struct Outgoing {
    reply: Reply,
    /// The request's API key and when its answer was ready; `None` for
    /// answers that are not counted as requests (the SASL gate's).
    timing: Option<(i16, Instant)>,
}

impl Outgoing {
    fn uncounted(reply: Reply) -> Outgoing {
        Outgoing {
            reply,
            timing: None,
        }
    }
}

/// Requests of one connection in progress at once: handled, with answers
/// not yet written.
const PIPELINE_DEPTH: usize = 16;

async fn run<R: Receive, W: Outbound>(
    shard: &Rc<Shard>,
    stream: &mut R,
    out: &mut W,
    client: &handlers::Client,
    gate: Option<SaslGate>,
    active: &Cell<Instant>,
) -> Result<(), CloseReason> {
    let (tx, rx) = local_channel::new_bounded(PIPELINE_DEPTH);
    let read = read_requests(shard, stream, client, gate, tx, active);
    let write = write_replies(shard, out, rx, active);
    futures::pin_mut!(read, write);
    match future::select(read, write).await {
        // The reader is done (the peer closed, or sent something that ends
        // the connection): answers already owed still go out first.
        Either::Left((read, write)) => {
            let written = write.await;
            read.and(written)
        }
        Either::Right((written, _)) => {
            // The writer failed: the socket is gone; so is the reader.
            written
        }
    }
}

async fn read_requests<R: Receive>(
    shard: &Rc<Shard>,
    stream: &mut R,
    client: &handlers::Client,
    mut gate: Option<SaslGate>,
    replies: LocalSender<Outgoing>,
    active: &Cell<Instant>,
) -> Result<(), CloseReason> {
    let max = shard.broker.config.request_max_bytes();
    let mut reader = FrameReader::new(gate.as_ref().map_or(max, |g| g.frame_bytes_max(max)));
    loop {
        // A client over a quota is muted: its next request waits unread
        // (KIP-219), on a timer of this connection's task alone.
        if let Some(until) = client.muted_until.take() {
            let now = Instant::now();
            if until > now {
                glommio::timer::sleep(until - now).await;
            }
        }
        let Some(payload) = reader.next(stream).await? else {
            break;
        };
        let received = reader.received_at();
        active.set(received);
        if let Some(gate) = gate.as_mut() {
            let verdict = gate.check(&payload, client, || shard.metadata());
            reader.set_frame_bytes_max(gate.frame_bytes_max(max));
            match verdict {
                Verdict::Serve => {}
                Verdict::Answer(frame) => {
                    let answer = Outgoing::uncounted(Reply::Frame(frame));
                    if replies.send(answer).await.is_err() {
                        break;
                    }
                    continue;
                }
                Verdict::Close {
                    answer,
                    delay,
                    reason,
                } => {
                    // Only this connection's task waits: the shard serves
                    // everyone else meanwhile.
                    glommio::timer::sleep(delay).await;
                    if let Some(frame) = answer {
                        let _ = replies.send(Outgoing::uncounted(Reply::Frame(frame))).await;
                    }
                    return Err(CloseReason::Sasl(reason));
                }
            }
        }
        let header = parse_request_header(&payload)?;
        let body = payload.slice(header.body_start..);
        let started = Instant::now();
        let reply = handlers::handle(shard, &header, body, client).await;
        let ready = Instant::now();
        crate::metrics::request(
            header.api_key,
            header.api_version,
            started.saturating_duration_since(received),
            ready.saturating_duration_since(started),
            reply.is_ok(),
        );
        let answer = Outgoing {
            reply: reply?,
            timing: Some((header.api_key, ready)),
        };
        if replies.send(answer).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn write_replies<W: Outbound>(
    shard: &Shard,
    stream: &mut W,
    replies: LocalReceiver<Outgoing>,
    active: &Cell<Instant>,
) -> Result<(), CloseReason> {
    while let Some(Outgoing { reply, timing }) = replies.recv().await {
        let ready = match reply {
            // No answer (acks=0), so no send time.
            Reply::None => continue,
            Reply::Frame(bytes) => {
                stream.send(&bytes).await?;
                timing.map(|(_, ready)| ready)
            }
            Reply::Parts(parts) => {
                write_parts(shard, stream, parts).await?;
                timing.map(|(_, ready)| ready)
            }
            Reply::Later(Later(rest)) => {
                let bytes = rest.await?;
                // Ready once the in-sync replicas have its batches, as
                // this writer (next in line for it) sees it.
                let ready = Instant::now();
                stream.send(&bytes).await?;
                Some(ready)
            }
        };
        let sent = Instant::now();
        active.set(sent);
        if let (Some((api, _)), Some(ready)) = (timing, ready) {
            crate::metrics::response_sent(api, sent.saturating_duration_since(ready));
        }
    }
    Ok(())
}

async fn write_parts<W: Outbound>(
    shard: &Shard,
    stream: &mut W,
    parts: Vec<Part<crate::storage::segment::FileRegion>>,
) -> io::Result<()> {
    // One packet per part otherwise (the socket has TCP_NODELAY): a fetch
    // of a few partitions would cost the client a wake-up per partition.
    let corked = parts.len() > 1;
    if corked {
        stream.cork(true)?;
    }
    for part in parts {
        match part {
            Part::Bytes(b) => stream.send(&b).await?,
            Part::Region(r) => stream.send_region(&r, &shard.stats).await?,
        }
    }
    if corked {
        stream.cork(false)?;
    }
    Ok(())
}

/// Whether to warn about a client at `peer` (see [`super::log_limit`]):
/// `Some(n)` with the warnings about it left out since the last one.
fn warn_about(peer: Option<std::net::SocketAddr>) -> Option<u64> {
    let Some(peer) = peer else {
        return Some(0);
    };
    match super::log_limit::decide(peer.ip()) {
        super::log_limit::Decision::Log { left_out } => Some(left_out),
        super::log_limit::Decision::Quiet => None,
    }
}
