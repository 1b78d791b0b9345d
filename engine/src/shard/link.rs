//! A follower's connection to a leader: plaintext, or TLS when the
//! inter-broker listener is an SSL one (the leader's certificate checked
//! against the truststore, this broker's keystore shown as its client
//! certificate). One request is in flight at a time, so one task drives
//! the session: no halves, no sharing.

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Ciphertext read from the socket at once.
const CIPHER_READ_BYTES: usize = 64 * 1024;

/// A connection to a leader.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<TlsLink>),
}

/// The TLS session of a [`Link`].
pub struct TlsLink {
    stream: TcpStream,
    conn: ClientConnection,
    cipher: Vec<u8>,
    out: Vec<u8>,
}

impl Link {
    /// Runs the handshake with the leader at `host` over `stream`.
    pub async fn tls(
        mut stream: TcpStream,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Link, crate::security::tls::HandshakeError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn = ClientConnection::new(config, name)?;
        crate::security::tls::drive_handshake(&mut stream, &mut conn).await?;
        Ok(Link::Tls(Box::new(TlsLink {
            stream,
            conn,
            cipher: vec![0u8; CIPHER_READ_BYTES],
            out: Vec::new(),
        })))
    }

    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let t = match self {
            Link::Plain(s) => return s.write_all(bytes).await,
            Link::Tls(t) => t,
        };
        loop {
            let n = t.conn.writer().write(bytes)?;
            bytes = &bytes[n..];
            while t.conn.wants_write() {
                t.out.clear();
                t.conn.write_tls(&mut t.out)?;
                t.stream.write_all(&t.out).await?;
            }
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let t = match self {
            Link::Plain(s) => return s.read_exact(buf).await,
            Link::Tls(t) => t,
        };
        let mut filled = 0;
        while filled < buf.len() {
            match t.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let n = t.stream.read(&mut t.cipher).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let mut input = &t.cipher[..n];
                    while !input.is_empty() {
                        t.conn.read_tls(&mut input)?;
                        t.conn
                            .process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
