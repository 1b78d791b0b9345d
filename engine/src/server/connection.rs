//! One client connection: read a frame, handle it, write the response,
//! repeat. Like Kafka, a connection's requests are handled one at a time
//! and answered in order; concurrency comes from many connections.
//!
//! Anything that makes the byte stream unreadable (a length outside the
//! limits, an unknown API key, an unsupported version, a body that does not
//! decode) is logged and closes this connection only.

use super::frame_reader::{FrameReadError, FrameReader};
use super::handlers::{self, HandlerError, Reply};
use super::sendfile::{send_region, set_nonblocking};
use crate::shard::Shard;
use futures::AsyncWriteExt;
use glommio::net::TcpStream;
use sluice_protocol::fetch_response::Part;
use sluice_protocol::frame;
use sluice_protocol::header::{parse_request_header, HeaderError};
use std::io;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

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
}

impl From<FrameReadError> for CloseReason {
    fn from(e: FrameReadError) -> CloseReason {
        match e {
            FrameReadError::Io(e) => CloseReason::Io(e),
            FrameReadError::Frame(e) => CloseReason::Frame(e),
        }
    }
}

/// Serves one connection until the peer closes it or sends garbage.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
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
    let client = handlers::Client::new(client_host);
    match run(&shard, &mut stream, &client).await {
        Ok(()) => tracing::debug!(%peer, shard = shard.id, "connection closed by peer"),
        Err(CloseReason::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => tracing::warn!(%peer, shard = shard.id, error = %e, "closing connection"),
    }
}

async fn run(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    client: &handlers::Client,
) -> Result<(), CloseReason> {
    let mut reader = FrameReader::new(shard.broker.config.request_max_bytes());
    while let Some(payload) = reader.next(stream).await? {
        let header = parse_request_header(&payload)?;
        let body = payload.slice(header.body_start..);
        let reply = handlers::handle(shard, &header, body, client).await?;
        write_reply(shard, stream, reply).await?;
    }
    Ok(())
}

async fn write_reply(shard: &Shard, stream: &mut TcpStream, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::None => Ok(()),
        Reply::Frame(bytes) => stream.write_all(&bytes).await,
        Reply::Parts(parts) => write_parts(shard, stream, parts).await,
    }
}

async fn write_parts(
    shard: &Shard,
    stream: &mut TcpStream,
    parts: Vec<Part<crate::storage::segment::FileRegion>>,
) -> io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => stream.write_all(&b).await?,
            Part::Region(r) => send_region(stream, &r, &shard.stats).await?,
        }
    }
    Ok(())
}
