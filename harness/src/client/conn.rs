//! One TCP connection to a broker.
//!
//! Two ways to use it: blocking round trips for control requests (metadata,
//! topic creation, offsets, fetch), and a non-blocking pipeline for the
//! producer, which queues requests, flushes what the socket takes and reads
//! whatever responses have arrived, so one thread can keep
//! `max.in.flight.requests.per.connection` requests outstanding on several
//! brokers without a thread per connection.

use super::error::ClientError;
use super::wire::{self, Versions};
use bytes::{Buf, Bytes, BytesMut};
use sluice_protocol::frame::{payload_len, FRAME_HEADER_SIZE, FRAME_SIZE_MAX_DEFAULT};
use sluice_protocol::messages::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::messages::protocol::{Decodable, Encodable};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Pieces handed to one `writev`: a Produce request is two per batch.
const IOVECS_MAX: usize = 64;
/// How long a blocking read waits for a response unless told otherwise.
const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
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
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(ClientError::io("connecting to", addr))?;
        stream
            .set_nodelay(true)
            .map_err(ClientError::io("setting TCP_NODELAY on", addr))?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT_DEFAULT))
            .map_err(ClientError::io("setting a read timeout on", addr))?;
        let mut c = Connection {
            addr,
            stream,
            next_correlation: 1,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            out: VecDeque::new(),
            queued: 0,
            written: 0,
            versions: Versions::default(),
            nonblocking: false,
            read_timeout: READ_TIMEOUT_DEFAULT,
        };
        c.versions = c.api_versions()?;
        Ok(c)
    }

    /// Connects to broker `id` at its address in `addrs` (from Metadata).
    pub fn to_broker(
        addrs: &std::collections::BTreeMap<i32, SocketAddr>,
        id: i32,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let addr = *addrs.get(&id).ok_or(ClientError::NoLeader {
            topic: "(any)".into(),
            partition: -1,
        })?;
        Connection::connect(addr, timeout)
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
        let corr = self.send(api, version, body)?;
        let payload = self.recv_payload()?;
        let (got, resp) = wire::decode_response(api, version, payload)?;
        self.check_correlation(corr, got)?;
        Ok(resp)
    }

    /// Reads once; `Ok(false)` when a non-blocking socket had nothing.
    fn fill(&mut self) -> Result<bool, ClientError> {
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

    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
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
