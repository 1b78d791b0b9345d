//! A connection between two cluster processes that one task drives: a
//! follower's connection to a leader, a broker's or a voter's connection
//! to a voter's controller listener, and the voter's end of it.
//!
//! Plaintext, or TLS: as a client the peer's certificate is checked
//! against the listener's truststore with the host the peer was dialled
//! by, and this process's keystore is shown as its client certificate; as
//! a server the listener's configuration decides whether a client
//! certificate is required. One request is in flight at a time, so one
//! task drives the session: no halves, no sharing.

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Ciphertext read from the socket at once.
const CIPHER_READ_BYTES: usize = 64 * 1024;

/// A connection to (or from) another cluster process.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<TlsLink>),
}

/// The TLS session of a [`Link`].
pub struct TlsLink {
    stream: TcpStream,
    conn: Connection,
    /// `cipher[pos..end]` came from the socket and is not yet given to
    /// rustls: rustls refuses more ciphertext while 16 KiB of plaintext
    /// wait to be read, so it is fed one read at a time.
    cipher: Vec<u8>,
    pos: usize,
    end: usize,
    out: Vec<u8>,
}

impl Link {
    /// Runs the client side of a handshake with the peer at `host` over
    /// `stream`.
    pub async fn tls(
        mut stream: TcpStream,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Link, super::tls::HandshakeError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn = ClientConnection::new(config, name)?;
        super::tls::drive_handshake(&mut stream, &mut conn).await?;
        Ok(Link::wrap(stream, Connection::Client(conn)))
    }

    /// Runs the server side of a handshake over `stream`. In TLS 1.3 a
    /// client certificate the server refuses is only known once the
    /// client's last handshake flight is processed, which this waits for.
    pub async fn accept(
        mut stream: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<
        (Link, Option<rustls::pki_types::CertificateDer<'static>>),
        super::tls::HandshakeError,
    > {
        let mut conn = ServerConnection::new(config)?;
        super::tls::drive_handshake(&mut stream, &mut conn).await?;
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        Ok((Link::wrap(stream, Connection::Server(conn)), cert))
    }

    fn wrap(stream: TcpStream, conn: Connection) -> Link {
        Link::Tls(Box::new(TlsLink {
            stream,
            conn,
            cipher: vec![0u8; CIPHER_READ_BYTES],
            pos: 0,
            end: 0,
            out: Vec::new(),
        }))
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.feed().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl TlsLink {
    /// Gives rustls one read's worth of ciphertext (reading the socket if
    /// none is left) and processes it; whatever it queued to send (a
    /// KeyUpdate answer, an alert) goes out at once.
    async fn feed(&mut self) -> io::Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = self.stream.read(&mut self.cipher).await?;
            if self.end == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let mut input = &self.cipher[self.pos..self.end];
        let n = self.conn.read_tls(&mut input)?;
        self.pos += n;
        let processed = self.conn.process_new_packets();
        while self.conn.wants_write() {
            self.out.clear();
            self.conn.write_tls(&mut self.out)?;
            self.stream.write_all(&self.out).await?;
        }
        processed
            .map(|_| ())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    //! The link's TLS over loopback. rustls refuses ciphertext while more
    //! than 16 KiB of plaintext wait to be read; the link once gave it a
    //! whole 64 KiB socket read at a time, so an answer of more than about
    //! 32 KiB arriving at once failed with "received plaintext buffer
    //! full". A metadata image or a follower's fetch is easily that large.
    use super::*;
    use glommio::net::TcpListener;
    use glommio::LocalExecutorBuilder;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::RootCertStore;

    /// A server and a client configuration from one CA; the server wants
    /// a client certificate, and the client shows one only if `show`.
    fn configs(show: bool) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let der = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_cert.der().to_vec()))
            .unwrap();
        let roots = Arc::new(roots);
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), der())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client = match show {
            true => client.with_client_auth_cert(chain, der()).unwrap(),
            false => client.with_no_client_auth(),
        };
        (Arc::new(server), Arc::new(client))
    }

    /// The server sends `len` bytes in one write; what the client read,
    /// or why the server refused it.
    fn exchange(len: usize, show: bool) -> Result<Vec<u8>, String> {
        LocalExecutorBuilder::default()
            .spawn(move || async move {
                let (server, client) = configs(show);
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let reader = glommio::spawn_local(async move {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    let mut link = Link::tls(stream, client, "127.0.0.1").await.ok()?;
                    let mut got = vec![0u8; len];
                    link.read_exact(&mut got).await.ok()?;
                    Some(got)
                });
                let stream = listener.accept().await.unwrap();
                let (mut link, cert) = match Link::accept(stream, server).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        drop(reader.await);
                        return Err(e.to_string());
                    }
                };
                assert!(cert.is_some(), "a client certificate was required");
                let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                link.write_all(&sent).await.unwrap();
                let got = reader.await.expect("the client read it all");
                assert_eq!(got, sent);
                Ok(got)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_large_answer_arriving_at_once_is_read_whole() {
        assert_eq!(exchange(4 << 20, true).unwrap().len(), 4 << 20);
    }

    #[test]
    fn a_peer_without_a_certificate_is_refused_in_the_handshake() {
        let e = exchange(16, false).unwrap_err();
        assert!(e.contains("no certificates"), "{e}");
    }
}
