//! One client connection: read a frame, handle it, write the response,
//! repeat. Like Kafka, a connection's requests are handled one at a time
//! and answered in order; concurrency comes from many connections.
//!
//! Anything that makes the byte stream unreadable (a length outside the
//! limits, an unknown API key, an unsupported version, a body that does not
//! decode) is logged and closes this connection only.

use super::handlers::{self, HandlerError, Reply};
use super::sendfile::{send_region, set_nonblocking};
use crate::shard::Shard;
use bytes::BytesMut;
use futures::io::BufReader;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use sluice_protocol::fetch_response::Part;
use sluice_protocol::frame::{self, FRAME_HEADER_SIZE};
use sluice_protocol::header::{parse_request_header, HeaderError};
use std::io;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

/// Read buffer per connection: small requests arrive several per read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

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

/// Serves one connection until the peer closes it or sends garbage.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
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
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    match run(&shard, &mut reader, &client_host).await {
        Ok(()) => tracing::debug!(%peer, shard = shard.id, "connection closed by peer"),
        Err(CloseReason::Io(e)) => tracing::debug!(%peer, error = %e, "connection closed"),
        Err(e) => tracing::warn!(%peer, shard = shard.id, error = %e, "closing connection"),
    }
}

async fn run(
    shard: &Rc<Shard>,
    reader: &mut BufReader<TcpStream>,
    client_host: &str,
) -> Result<(), CloseReason> {
    let max = shard.broker.config.request_max_bytes();
    loop {
        let mut prefix = [0u8; FRAME_HEADER_SIZE];
        match reader.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = frame::payload_len(prefix, max)?;
        let mut payload = BytesMut::zeroed(len);
        reader.read_exact(&mut payload).await?;
        let payload = payload.freeze();
        let header = parse_request_header(&payload)?;
        let body = payload.slice(header.body_start..);
        let reply = handlers::handle(shard, &header, body, client_host).await?;
        write_reply(shard, reader.get_mut(), reply).await?;
    }
}

async fn write_reply(shard: &Shard, stream: &mut TcpStream, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::None => Ok(()),
        Reply::Frame(bytes) => stream.write_all(&bytes).await,
        Reply::Parts(parts) => {
            for part in parts {
                match part {
                    Part::Bytes(b) => stream.write_all(&b).await?,
                    Part::Region(r) => send_region(stream, &r, &shard.stats).await?,
                }
            }
            Ok(())
        }
    }
}
