//! One TCP connection to a broker.
//!
//! Two ways to use it: blocking round trips for control requests (metadata,
//! topic creation, offsets, fetch), and a non-blocking pipeline for the
//! producer, which queues requests, flushes what the socket takes and reads
//! whatever responses have arrived, so one thread can keep
//! `max.in.flight.requests.per.connection` requests outstanding on several
//! brokers without a thread per connection.
//!
//! Under TLS both ways keep their shape: the plaintext path's pieces go to
//! rustls instead of `writev` (encrypted into records as it takes them),
//! and reads go through rustls before the same frame splitting. A
//! connection without TLS never touches rustls, so the plaintext path costs
//! what it did before TLS existed. SASL runs once, in [`Connection::open`],
//! before the connection is handed out.

use super::endpoint::Endpoint;
use super::error::ClientError;
use super::security::tls::{self, ReadAhead};
use super::security::{sasl, SaslSettings, Security};
use super::wire::{self, Versions};
use bytes::{Buf, Bytes, BytesMut};
use sluice_protocol::frame::{payload_len, FRAME_HEADER_SIZE, FRAME_SIZE_MAX_DEFAULT};
use sluice_protocol::messages::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::messages::protocol::{Decodable, Encodable};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Pieces handed to one `writev`: a Produce request is two per batch.
const IOVECS_MAX: usize = 64;
/// How long a blocking read waits for a response unless told otherwise.
const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// What carries the bytes: the socket itself, or TLS over it.
enum Transport {
    Plain,
    Tls(Box<TlsState>),
}

struct TlsState {
    conn: rustls::ClientConnection,
    ahead: ReadAhead,
}

pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    transport: Transport,
    next_correlation: i32,
    rbuf: BytesMut,
    /// Encoded control requests, before they join `out`.
    wbuf: BytesMut,
    /// Pieces of requests not yet written, in order; the first may be
    /// partly written already.
    out: VecDeque<Bytes>,
    /// Bytes in `out`.
    queued: usize,
    /// Bytes written by `flush_some`, ever.
    written: u64,
    versions: Versions,
    nonblocking: bool,
    read_timeout: Duration,
    /// The credentials this connection authenticated with, kept to
    /// re-authenticate before the broker's session ends (KIP-368).
    sasl: Option<SaslSettings>,
    /// When to re-authenticate; `None` when the session does not expire
    /// (or while authenticating).
    reauth_at: Option<Instant>,
}

/// Re-authenticate once this fraction of the broker's session lifetime has
/// passed, as Kafka's clients do (they pick 85–95%), leaving the rest for
/// the requests in flight to finish first.
const REAUTH_AT_FRACTION: f64 = 0.85;

impl Connection {
    /// Connects over PLAINTEXT to an address known by its IP (tests and
    /// tools against a plaintext listener); see [`Connection::open`].
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ClientError> {
        Connection::open(&Endpoint::from(addr), &Security::plaintext(), timeout)
    }

    /// Connects, shakes hands (TLS) when `security` says so, learns the
    /// broker's API versions and authenticates (SASL). Every connection the
    /// harness's client opens comes from here.
    pub fn open(
        ep: &Endpoint,
        security: &Security,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        debug_assert!(security.is_consistent());
        let addr = ep.addr;
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(ClientError::io("connecting to", addr))?;
        stream
            .set_nodelay(true)
            .map_err(ClientError::io("setting TCP_NODELAY on", addr))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT_DEFAULT))
            .map_err(ClientError::io("setting a read timeout on", addr))?;
        let transport = match &security.tls {
            None => Transport::Plain,
            Some(t) => Transport::Tls(Box::new(handshake(ep, &stream, t)?)),
        };
        let mut c = Connection {
            addr,
            stream,
            transport,
            next_correlation: 1,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            out: VecDeque::new(),
            queued: 0,
            written: 0,
            versions: Versions::default(),
            nonblocking: false,
            read_timeout: READ_TIMEOUT_DEFAULT,
            sasl: security.sasl.clone(),
            reauth_at: None,
        };
        c.versions = c.api_versions()?;
        c.authenticate()?;
        Ok(c)
    }

    /// Runs SASL when the connection has credentials, and schedules the
    /// next run from the session lifetime the broker grants.
    fn authenticate(&mut self) -> Result<(), ClientError> {
        let Some(s) = self.sasl.clone() else {
            return Ok(());
        };
        self.reauth_at = None;
        let lifetime_ms = sasl::authenticate(self, &s)?;
        if lifetime_ms > 0 {
            let after = Duration::from_millis(lifetime_ms as u64).mul_f64(REAUTH_AT_FRACTION);
            self.reauth_at = Some(Instant::now() + after);
        }
        Ok(())
    }

    /// Whether the broker's SASL session is close enough to its end that
    /// the connection should re-authenticate before its next request.
    pub fn reauth_due(&self) -> bool {
        self.reauth_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Re-authenticates on this connection (KIP-368): SaslHandshake and
    /// SaslAuthenticate again, blocking. Only with no response outstanding,
    /// so no answer to an earlier request is read as part of it.
    pub fn reauthenticate(&mut self) -> Result<(), ClientError> {
        let nonblocking = self.nonblocking;
        if nonblocking {
            self.stream
                .set_nonblocking(false)
                .map_err(ClientError::io("setting blocking mode on", self.addr))?;
            self.nonblocking = false;
        }
        let result = self.authenticate();
        if nonblocking {
            self.set_nonblocking()?;
        }
        result
    }

    /// Connects to broker `id` at its address in `addrs` (from Metadata).
    pub fn to_broker(
        addrs: &std::collections::BTreeMap<i32, Endpoint>,
        id: i32,
        security: &Security,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let ep = addrs.get(&id).ok_or(ClientError::NoLeader {
            topic: "(any)".into(),
            partition: -1,
        })?;
        Connection::open(ep, security, timeout)
    }

    fn api_versions(&mut self) -> Result<Versions, ClientError> {
        // v3 is flexible; a broker that does not know it answers in v0 with
        // UNSUPPORTED_VERSION, and v0 is then asked for.
        for version in [3, 0] {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(
                    sluice_protocol::messages::protocol::StrBytes::from_static_str("sluice-bench"),
                )
                .with_client_software_version(
                    sluice_protocol::messages::protocol::StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    )),
                );
            let corr = self.send(ApiKey::ApiVersions, version, &req)?;
            let payload = self.recv_payload()?;
            let decoded =
                wire::decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, version, payload);
            match decoded {
                Ok((got, resp)) if resp.error_code == 0 => {
                    self.check_correlation(corr, got)?;
                    return Ok(Versions::from_response(
                        resp.api_keys
                            .iter()
                            .map(|k| (k.api_key, k.min_version, k.max_version)),
                    )
                    .with_finalized(
                        resp.finalized_features
                            .iter()
                            .map(|f| (f.name.to_string(), f.max_version_level)),
                    ));
                }
                _ if version != 0 => continue,
                Ok((_, resp)) => {
                    return Err(ClientError::Broker {
                        what: format!("ApiVersions to {}", self.addr),
                        code: sluice_protocol::ErrorCode::from_code(resp.error_code),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on version 0")
    }

    /// Changes how long a blocking round trip waits for its response (a
    /// JoinGroup may be held by the coordinator for a whole rebalance).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::io("setting a read timeout on", self.addr))?;
        self.read_timeout = timeout;
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        self.versions.pick(api)
    }

    fn check_correlation(&self, expected: i32, got: i32) -> Result<(), ClientError> {
        if expected != got {
            return Err(ClientError::Correlation {
                addr: self.addr,
                expected,
                got,
            });
        }
        Ok(())
    }

    /// Queues a request in the write buffer; returns its correlation id.
    pub fn queue<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<i32, ClientError> {
        let corr = self.next_correlation();
        wire::encode_request(&mut self.wbuf, api, version, corr, body)?;
        let frame = self.wbuf.split().freeze();
        self.push_out(frame);
        Ok(corr)
    }

    /// The next correlation id, for a request the caller encodes itself.
    pub fn next_correlation(&mut self) -> i32 {
        let corr = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
        corr
    }

    /// Queues a request already encoded as `pieces` of one frame.
    pub fn queue_pieces(&mut self, pieces: Vec<Bytes>) {
        for p in pieces {
            self.push_out(p);
        }
    }

    fn push_out(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.queued += piece.len();
            self.out.push_back(piece);
        }
    }

    /// Encodes and writes a request, blocking until it is sent.
    pub fn send<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<i32, ClientError> {
        debug_assert!(!self.nonblocking);
        let corr = self.queue(api, version, body)?;
        // Blocking: each write takes something or fails.
        self.flush_some()?;
        Ok(corr)
    }

    /// Blocks until one whole response payload is read.
    pub fn recv_payload(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(p) = self.take_frame()? {
                return Ok(p);
            }
            if !self.fill()? && !self.nonblocking {
                // A blocking read that returned nothing hit the read timeout.
                return Err(ClientError::Timeout {
                    what: "a response",
                    ms: self.read_timeout.as_millis() as u64,
                });
            }
        }
    }

    /// A blocking request/response round trip at the negotiated version.
    pub fn roundtrip<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        let version = self.version(api)?;
        self.roundtrip_at(api, version, body)
    }

    pub fn roundtrip_at<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        if self.reauth_due() {
            self.authenticate()?;
        }
        let corr = self.send(api, version, body)?;
        self.answer(api, version, corr)
    }

    /// Sends a request at the negotiated version without waiting for its
    /// answer: (correlation id, version), for [`Self::answer`] once
    /// [`Self::answer_ready`].
    pub fn ask<Req: Encodable>(
        &mut self,
        api: ApiKey,
        body: &Req,
    ) -> Result<(i32, i16), ClientError> {
        if self.reauth_due() {
            self.authenticate()?;
        }
        let version = self.version(api)?;
        Ok((self.send(api, version, body)?, version))
    }

    /// Whether an answer has begun to arrive, so [`Self::answer`] will not
    /// wait for the broker (at most for the rest of a frame on its way).
    pub fn answer_ready(&self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on this stack frame; a zero timeout.
        unsafe { libc::poll(&mut fd, 1, 0) > 0 }
    }

    /// Reads the answer to the request `corr` (blocking).
    pub fn answer<Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        corr: i32,
    ) -> Result<Resp, ClientError> {
        let payload = self.recv_payload()?;
        let (got, resp) = wire::decode_response(api, version, payload)?;
        self.check_correlation(corr, got)?;
        Ok(resp)
    }

    /// Reads once; `Ok(false)` when a non-blocking socket had nothing.
    fn fill(&mut self) -> Result<bool, ClientError> {
        if let Transport::Tls(t) = &mut self.transport {
            return fill_tls(t, &self.stream, &mut self.rbuf, self.addr);
        }
        // Straight into the read buffer's spare room: neither zeroed first
        // (resizing would zero 256 KiB per read) nor read into a scratch
        // buffer and copied over (one more copy of every fetched byte).
        self.rbuf.reserve(READ_CHUNK);
        let spare = self.rbuf.spare_capacity_mut();
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
        // `rbuf`; `read` writes at most that many and returns how many.
        let r = unsafe {
            libc::read(
                self.stream.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
            )
        };
        if r > 0 {
            // SAFETY: the kernel initialised the first `r` spare bytes.
            unsafe { self.rbuf.set_len(self.rbuf.len() + r as usize) };
            return Ok(true);
        }
        if r == 0 {
            return Err(ClientError::Closed { addr: self.addr });
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            // A blocking socket's read timeout also reads as WouldBlock.
            ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(false),
            _ => Err(ClientError::Io {
                op: "reading a response from",
                addr: self.addr,
                source: e,
            }),
        }
    }

    /// Splits one whole frame off the read buffer, checking its length
    /// against the 100 MiB frame limit before waiting for its bytes.
    fn take_frame(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.rbuf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let prefix = [self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]];
        let len =
            payload_len(prefix, FRAME_SIZE_MAX_DEFAULT).map_err(|source| ClientError::Frame {
                addr: self.addr,
                source,
            })?;
        if self.rbuf.len() < FRAME_HEADER_SIZE + len {
            self.rbuf.reserve(FRAME_HEADER_SIZE + len - self.rbuf.len());
            return Ok(None);
        }
        self.rbuf.advance(FRAME_HEADER_SIZE);
        Ok(Some(self.rbuf.split_to(len).freeze()))
    }

    // ---- non-blocking pipeline, for the producer ----

    pub fn set_nonblocking(&mut self) -> Result<(), ClientError> {
        self.stream
            .set_nonblocking(true)
            .map_err(ClientError::io("setting non-blocking mode on", self.addr))?;
        self.nonblocking = true;
        Ok(())
    }

    /// Writes what the socket takes of the queued requests, up to
    /// [`IOVECS_MAX`] pieces per `writev`.
    pub fn flush_some(&mut self) -> Result<(), ClientError> {
        if matches!(self.transport, Transport::Tls(_)) {
            return self.flush_tls();
        }
        while !self.out.is_empty() {
            let iov: Vec<libc::iovec> = self
                .out
                .iter()
                .take(IOVECS_MAX)
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                })
                .collect();
            // SAFETY: every iovec points into a `Bytes` held by `self.out`,
            // which is not touched until `writev` returns.
            let r = unsafe {
                libc::writev(
                    self.stream.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    ErrorKind::WouldBlock => return Ok(()),
                    ErrorKind::Interrupted => continue,
                    _ => {
                        return Err(ClientError::Io {
                            op: "writing a request to",
                            addr: self.addr,
                            source: e,
                        })
                    }
                }
            }
            if r == 0 {
                return Err(ClientError::Closed { addr: self.addr });
            }
            self.consume_written(r as usize);
        }
        Ok(())
    }

    /// Drops `n` written bytes from the front of `out`.
    fn consume_written(&mut self, mut n: usize) {
        self.written += n as u64;
        self.queued -= n;
        while n > 0 {
            let front = self.out.front_mut().expect("written bytes were queued");
            if front.len() <= n {
                n -= front.len();
                self.out.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Whether requests, or TLS records, wait for the socket.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() || matches!(&self.transport, Transport::Tls(t) if t.conn.wants_write())
    }

    /// Hands queued pieces to rustls as it takes them and writes its
    /// records to the socket until everything is written or the socket
    /// would block. A piece counts as written once rustls holds it
    /// encrypted: rustls's bounded buffer ([`tls::SEND_BUFFER_LIMIT`]) is
    /// one more send buffer in front of the kernel's.
    fn flush_tls(&mut self) -> Result<(), ClientError> {
        loop {
            let Transport::Tls(t) = &mut self.transport else {
                unreachable!("called for TLS connections only");
            };
            while t.conn.wants_write() {
                match t.conn.write_tls(&mut &self.stream) {
                    Ok(0) => return Err(ClientError::Closed { addr: self.addr }),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(ClientError::Io {
                            op: "writing a request to",
                            addr: self.addr,
                            source,
                        })
                    }
                }
            }
            if self.out.is_empty() {
                return Ok(());
            }
            let iov: Vec<std::io::IoSlice<'_>> = self
                .out
                .iter()
                .take(IOVECS_MAX)
                .map(|p| std::io::IoSlice::new(p))
                .collect();
            let taken = t
                .conn
                .writer()
                .write_vectored(&iov)
                .map_err(|e| tls_io_error(self.addr, e))?;
            drop(iov);
            if taken == 0 {
                // rustls's buffer is empty (drained above) yet took
                // nothing: only a connection in a failed state does that.
                return Err(ClientError::Closed { addr: self.addr });
            }
            self.consume_written(taken);
        }
    }

    /// Bytes queued but not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Bytes the socket has taken from the write buffer, ever.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Reads whatever has arrived and appends each whole response payload.
    pub fn read_available(&mut self, out: &mut Vec<Bytes>) -> Result<(), ClientError> {
        loop {
            while let Some(p) = self.take_frame()? {
                out.push(p);
            }
            if !self.fill()? {
                return Ok(());
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// The TLS handshake, on the still blocking socket (its read timeout bounds
/// each wait).
fn handshake(
    ep: &Endpoint,
    stream: &TcpStream,
    t: &super::security::TlsSettings,
) -> Result<TlsState, ClientError> {
    let addr = ep.addr;
    let name =
        tls::server_name(&ep.host).map_err(|reason| ClientError::TlsSetup { addr, reason })?;
    let mut conn = rustls::ClientConnection::new(t.config.clone(), name)
        .map_err(|source| ClientError::Tls { addr, source })?;
    conn.set_buffer_limit(Some(tls::SEND_BUFFER_LIMIT));
    let mut s = stream;
    while conn.is_handshaking() {
        match conn.complete_io(&mut s) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(ClientError::Closed { addr });
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return Err(ClientError::Timeout {
                    what: "the TLS handshake",
                    ms: READ_TIMEOUT_DEFAULT.as_millis() as u64,
                })
            }
            Err(e) => return Err(tls_io_error(addr, e)),
        }
    }
    Ok(TlsState {
        conn,
        ahead: ReadAhead::default(),
    })
}

/// An I/O error from rustls: its own error when it carries one (a
/// certificate refused, an alert received), else the socket's.
fn tls_io_error(addr: SocketAddr, e: std::io::Error) -> ClientError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(source) => ClientError::Tls {
            addr,
            source: source.clone(),
        },
        None => ClientError::Io {
            op: "TLS with",
            addr,
            source: e,
        },
    }
}

/// Reads TLS records until some plaintext is decrypted (appended to
/// `rbuf`: `Ok(true)`) or the socket would block (`Ok(false)`).
fn fill_tls(
    t: &mut TlsState,
    stream: &TcpStream,
    rbuf: &mut BytesMut,
    addr: SocketAddr,
) -> Result<bool, ClientError> {
    loop {
        let state = t
            .conn
            .process_new_packets()
            .map_err(|source| ClientError::Tls { addr, source })?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            // Zeroing exactly the bytes about to be overwritten: rustls
            // copies into initialised memory only.
            let len = rbuf.len();
            rbuf.resize(len + n, 0);
            t.conn
                .reader()
                .read_exact(&mut rbuf[len..])
                .map_err(|e| tls_io_error(addr, e))?;
            return Ok(true);
        }
        if state.peer_has_closed() {
            return Err(ClientError::Closed { addr });
        }
        if t.conn.wants_write() {
            // An alert or key update rustls owes the broker; what the
            // socket does not take now goes with the next flush.
            let _ = t.conn.write_tls(&mut &*stream);
        }
        match t.conn.read_tls(&mut t.ahead.over(stream)) {
            Ok(0) => return Err(ClientError::Closed { addr }),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ClientError::Io {
                    op: "reading a response from",
                    addr,
                    source,
                })
            }
        }
    }
}
