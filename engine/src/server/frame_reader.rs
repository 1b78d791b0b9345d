//! Reading request frames off a socket into one buffer per connection.
//!
//! ```text
//! buf: [ frame n: len | payload ][ frame n+1: len | payl... ][ spare capacity ]
//!        split off as `Bytes` ──┘  already received         └ recv(2) writes here
//! ```
//!
//! `recv(2)` writes straight into the buffer's spare capacity, which is
//! never zeroed first, and a payload is split off as `Bytes` that share the
//! allocation. A 1 MiB produce request therefore costs the kernel's copy out
//! of the socket and nothing else: zeroing a fresh buffer per request
//! (`BytesMut::zeroed`) was 7% of the broker's CPU in a produce run, and a
//! 64 KiB `BufReader` in front of it copied the first 64 KiB of every
//! request twice. Once the handler has dropped a payload, the next
//! `reserve` takes the same allocation back, so a steady stream of
//! requests allocates nothing.
//!
//! When the socket has nothing to read, the task parks in glommio's own
//! read (io_uring readiness), reading at most [`WAIT_READ_BYTES`] into a
//! zeroed tail of the buffer, then goes back to `recv`.
//!
//! The reader notes when each receive returned ([`FrameReader::received_at`]):
//! a frame is complete once the receive that brought its last byte has,
//! which is the latest receive when [`FrameReader::next`] returns it. A
//! request's queue time is measured from there (one clock read per
//! receive, not per frame).

use super::socket::Half;
use bytes::{Buf, Bytes, BytesMut};
use futures::AsyncReadExt;
use sluice_protocol::frame::{self, FrameError, FRAME_HEADER_SIZE};
use std::io;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

/// Smallest receive: small requests arrive several per `recv`.
const RECV_BYTES_MIN: usize = 64 * 1024;

/// Bytes read through glommio to wait for a quiet socket (zeroed first).
const WAIT_READ_BYTES: usize = 4 * 1024;

/// A buffer that held a frame above this is given back once empty, so an
/// idle connection that once sent a large request does not keep its
/// memory. 4 MiB covers producers' usual requests (Kafka's
/// `max.request.size` is 1 MiB; the benches send up to 2 MB).
const RETAIN_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// Where a connection's bytes come from: the socket itself, or the
/// plaintext of a TLS session over it.
// Implemented only inside this crate, on one executor: the futures need
// no `Send` bound, which is what the lint warns about.
#[allow(async_fn_in_trait)]
pub trait Receive {
    /// Appends what arrives next to `buf` (after reserving room in it);
    /// returns how many bytes came, 0 at the end of the stream.
    async fn receive(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

impl Receive for Half {
    async fn receive(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match recv_into_spare(self.as_raw_fd(), buf)? {
            Some(n) => Ok(n),
            None => wait_and_read(self, buf).await,
        }
    }
}

/// Parks until the socket is readable and reads what glommio's read
/// gives into a small zeroed tail. Returns the bytes read (0: closed).
async fn wait_and_read(stream: &mut Half, buf: &mut BytesMut) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + WAIT_READ_BYTES, 0);
    let result = stream.read(&mut buf[start..]).await;
    let n = *result.as_ref().unwrap_or(&0);
    assert!(n <= WAIT_READ_BYTES);
    buf.truncate(start + n);
    result
}

/// Splits a connection's byte stream into request payloads.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    /// `socket.request.max.bytes`: checked before anything is reserved.
    frame_bytes_max: usize,
    /// Payload size of the last frame returned.
    last_frame_bytes: usize,
    /// When the latest receive returned bytes.
    received_at: Instant,
}

impl FrameReader {
    pub fn new(frame_bytes_max: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            frame_bytes_max,
            last_frame_bytes: 0,
            received_at: Instant::now(),
        }
    }

    /// When the last frame [`FrameReader::next`] returned was complete:
    /// when the receive that brought its last byte returned.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Changes the largest frame accepted from the next one on (smaller
    /// before SASL authentication).
    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        self.frame_bytes_max = frame_bytes_max;
    }

    /// The next request's payload (the frame without its length prefix),
    /// or `None` once the peer has closed the connection between frames.
    pub async fn next<S: Receive>(
        &mut self,
        stream: &mut S,
    ) -> Result<Option<Bytes>, FrameReadError> {
        if self.buf.is_empty() && self.last_frame_bytes > RETAIN_BYTES_MAX {
            self.buf = BytesMut::new();
        }
        if !self.fill(stream, FRAME_HEADER_SIZE).await? {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(truncated().into());
        }
        let mut prefix = [0u8; FRAME_HEADER_SIZE];
        prefix.copy_from_slice(&self.buf[..FRAME_HEADER_SIZE]);
        let len = frame::payload_len(prefix, self.frame_bytes_max)?;
        if !self.fill(stream, FRAME_HEADER_SIZE + len).await? {
            return Err(truncated().into());
        }
        self.buf.advance(FRAME_HEADER_SIZE);
        let payload = self.buf.split_to(len).freeze();
        debug_assert_eq!(payload.len(), len);
        self.last_frame_bytes = len;
        Ok(Some(payload))
    }

    /// Receives until `need` bytes are buffered; false at end of stream.
    async fn fill<S: Receive>(&mut self, stream: &mut S, need: usize) -> io::Result<bool> {
        while self.buf.len() < need {
            self.buf
                .reserve((need - self.buf.len()).max(RECV_BYTES_MIN));
            if stream.receive(&mut self.buf).await? == 0 {
                return Ok(false);
            }
            self.received_at = Instant::now();
        }
        Ok(true)
    }
}

/// One non-blocking `recv` into `buf`'s spare capacity. `None`: nothing to
/// read now; `Some(0)`: the peer closed the connection.
fn recv_into_spare(fd: std::os::unix::io::RawFd, buf: &mut BytesMut) -> io::Result<Option<usize>> {
    loop {
        let spare = buf.spare_capacity_mut();
        assert!(!spare.is_empty(), "reserve() left no room to receive into");
        // SAFETY: the kernel writes at most `spare.len()` bytes at the
        // pointer, which `spare` owns for the duration of the call.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = n as usize;
            assert!(n <= spare.len());
            // SAFETY: `recv` initialised the first `n` bytes of the spare
            // capacity, right after the current length.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed inside a frame",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt;
    use glommio::net::{TcpListener, TcpStream};
    use glommio::LocalExecutorBuilder;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// Sends `pieces` with a pause between them, then closes, and returns
    /// what the reader made of the stream.
    fn read_all(pieces: Vec<Vec<u8>>, max: usize) -> (Vec<Bytes>, Option<String>) {
        LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let writer = glommio::spawn_local(async move {
                    let mut client = TcpStream::connect(addr).await.unwrap();
                    for piece in pieces {
                        client.write_all(&piece).await.unwrap();
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    client.close().await.unwrap();
                });
                let (mut stream, _writer) =
                    crate::server::socket::split(listener.accept().await.unwrap());
                let mut reader = FrameReader::new(max);
                let mut frames = Vec::new();
                let error = loop {
                    match reader.next(&mut stream).await {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                };
                writer.await;
                (frames, error)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn frames_split_and_coalesced_come_out_whole() {
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = framed(b"one");
        stream.extend(framed(&large));
        stream.extend(framed(b"three"));
        // Cut inside a length prefix, inside the large payload, and so that
        // one piece ends one frame and starts the next.
        let cuts = [2, 9, 150_000, 300_010, stream.len()];
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts {
            pieces.push(stream[at..cut].to_vec());
            at = cut;
        }
        let (frames, error) = read_all(pieces, 1 << 20);
        assert_eq!(error, None);
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"one");
        assert_eq!(&frames[1][..], &large[..]);
        assert_eq!(&frames[2][..], b"three");
    }

    #[test]
    fn close_inside_a_frame_is_an_error() {
        let mut stream = framed(b"whole");
        stream.extend(&framed(b"cut short")[..7]);
        let (frames, error) = read_all(vec![stream], 1 << 20);
        assert_eq!(frames.len(), 1);
        assert!(error.unwrap().contains("inside a frame"));
    }

    #[test]
    fn length_above_the_limit_is_refused_before_reading_on() {
        let (frames, error) = read_all(vec![framed(&[7u8; 100])], 64);
        assert!(frames.is_empty());
        assert!(error.unwrap().contains("above the limit"));
    }
}
