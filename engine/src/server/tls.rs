//! A connection's TLS session: the handshake, then a reader half and a
//! writer half over one rustls `ServerConnection` shared between them.
//!
//! Both halves run on the connection's shard and borrow the session only
//! between awaits, never across one. Only the writer half writes to the
//! socket, so records leave in the order rustls made them: what the
//! reader half makes rustls queue after the handshake (a KeyUpdate
//! answer, an alert) goes out with the writer's next write.
//!
//! Fetch responses lose `sendfile` here: a file region is read from the
//! page cache into a reused buffer, encrypted, and written (counted in
//! the shard's `tls_bytes`). kTLS would give it back; see
//! docs/SECURITY.md.

use super::frame_reader::Receive;
use super::socket::Half;
use crate::shard::Stats;
use crate::storage::segment::FileRegion;
use bytes::BytesMut;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

/// Ciphertext read from the socket at once.
const CIPHER_READ_BYTES: usize = 64 * 1024;
/// Plaintext handed to the reader at once.
const PLAIN_READ_BYTES: usize = 64 * 1024;
/// Record bytes read from a segment and encrypted at once.
const REGION_CHUNK_BYTES: usize = 64 * 1024;

pub use crate::security::tls::HandshakeError;

/// Runs the server side of a handshake on `stream`.
pub async fn handshake(
    stream: &mut TcpStream,
    config: Arc<ServerConfig>,
) -> Result<ServerConnection, HandshakeError> {
    let mut conn = ServerConnection::new(config)?;
    crate::security::tls::drive_handshake(stream, &mut conn).await?;
    Ok(conn)
}

/// The reading half: decrypts what the socket brings.
pub struct TlsReader {
    stream: Half,
    conn: Rc<RefCell<ServerConnection>>,
    cipher: Vec<u8>,
    /// `cipher[pos..end]` is read from the socket, not yet given to rustls.
    pos: usize,
    end: usize,
}

/// The writing half: encrypts answers and sends them.
pub struct TlsWriter {
    stream: Half,
    conn: Rc<RefCell<ServerConnection>>,
    out: Vec<u8>,
    region: Vec<u8>,
}

/// Splits an established session into its halves, over the socket's.
pub fn split(conn: ServerConnection, stream: Half, writer_stream: Half) -> (TlsReader, TlsWriter) {
    let conn = Rc::new(RefCell::new(conn));
    let reader = TlsReader {
        stream,
        conn: Rc::clone(&conn),
        cipher: vec![0u8; CIPHER_READ_BYTES],
        pos: 0,
        end: 0,
    };
    let writer = TlsWriter {
        stream: writer_stream,
        conn,
        out: Vec::new(),
        region: Vec::new(),
    };
    (reader, writer)
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsReader {
    /// Plaintext already decrypted, appended to `buf`; `None` if there is
    /// none yet.
    fn take_plaintext(&mut self, buf: &mut BytesMut) -> io::Result<Option<usize>> {
        let start = buf.len();
        buf.resize(start + PLAIN_READ_BYTES, 0);
        let result = self.conn.borrow_mut().reader().read(&mut buf[start..]);
        match result {
            Ok(n) => {
                buf.truncate(start + n);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                Ok(None)
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }
}

impl Receive for TlsReader {
    async fn receive(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if let Some(n) = self.take_plaintext(buf)? {
                // 0: the peer sent close_notify.
                return Ok(n);
            }
            if self.pos == self.end {
                self.pos = 0;
                self.end = self.stream.read(&mut self.cipher).await?;
                if self.end == 0 {
                    return Ok(0);
                }
            }
            let mut conn = self.conn.borrow_mut();
            let mut input = &self.cipher[self.pos..self.end];
            let n = conn.read_tls(&mut input)?;
            self.pos += n;
            conn.process_new_packets().map_err(invalid)?;
        }
    }
}

/// Where a connection's answers go: the socket itself, or a TLS session.
// Implemented only inside this crate, on one executor (see `Receive`).
#[allow(async_fn_in_trait)]
pub trait Outbound {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    async fn send_region(&mut self, region: &FileRegion, stats: &Stats) -> io::Result<()>;
    /// Holds (`true`) or releases what is sent, so an answer of several
    /// parts leaves in as few packets as its size allows.
    fn cork(&self, on: bool) -> io::Result<()>;
}

impl Outbound for Half {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await
    }

    async fn send_region(&mut self, region: &FileRegion, stats: &Stats) -> io::Result<()> {
        super::sendfile::send_region(self, region, stats).await
    }

    fn cork(&self, on: bool) -> io::Result<()> {
        super::sendfile::cork(self.as_raw_fd(), on)
    }
}

impl TlsWriter {
    /// Sends every record rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        loop {
            self.out.clear();
            {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(&mut self.out)?;
            }
            self.stream.write_all(&self.out).await?;
        }
    }
}

impl Outbound for TlsWriter {
    async fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // rustls takes what fits its send buffer (64 KiB by default).
            let n = self.conn.borrow_mut().writer().write(bytes)?;
            bytes = &bytes[n..];
            self.flush().await?;
        }
        self.flush().await
    }

    async fn send_region(&mut self, region: &FileRegion, stats: &Stats) -> io::Result<()> {
        let mut chunk = std::mem::take(&mut self.region);
        chunk.resize(REGION_CHUNK_BYTES.min(region.len), 0);
        let mut position = region.position;
        let end = region.position + region.len as u64;
        let mut result = Ok(());
        while position < end && result.is_ok() {
            let want = ((end - position) as usize).min(chunk.len());
            result = region.file.read_exact_at(&mut chunk[..want], position);
            if result.is_ok() {
                result = self.send(&chunk[..want]).await;
                stats.tls_bytes.set(stats.tls_bytes.get() + want as u64);
                position += want as u64;
            }
        }
        self.region = chunk;
        result
    }

    fn cork(&self, on: bool) -> io::Result<()> {
        super::sendfile::cork(self.stream.as_raw_fd(), on)
    }
}
