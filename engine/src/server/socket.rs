//! One connection's socket as two halves, a reader and a writer, over a
//! single descriptor.
//!
//! The reader parks in a read while the writer sends answers, so each
//! needs a stream of its own to await on. glommio keeps a read and a write
//! in flight on one stream at once (each has its own io_uring source), so
//! both halves share one [`TcpStream`] and borrow it only inside a single
//! `poll_read` or `poll_write`, never across an await. Both run on the
//! connection's shard, one poll at a time, so the borrows never meet.
//!
//! The halves used to be two descriptors of the socket (a `dup`): a
//! broker then held two descriptors per connection, and 10,000 idle
//! connections took 20,000 of them, the whole of a common hard limit.

use futures::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// One half of a connection's socket.
#[derive(Debug)]
pub struct Half {
    stream: Rc<RefCell<TcpStream>>,
    fd: RawFd,
}

/// Splits `stream` into a reading and a writing half; the socket closes
/// when both are dropped.
pub fn split(stream: TcpStream) -> (Half, Half) {
    let fd = stream.as_raw_fd();
    let stream = Rc::new(RefCell::new(stream));
    (
        Half {
            stream: Rc::clone(&stream),
            fd,
        },
        Half { stream, fd },
    )
}

impl AsRawFd for Half {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::TcpListener;
    use glommio::LocalExecutorBuilder;

    /// The reader parks in a read while the writer writes on the same
    /// socket: an echo of 1 MiB through a peer that sends back what it gets.
    #[test]
    fn a_parked_reader_and_a_busy_writer_share_one_socket() {
        LocalExecutorBuilder::default()
            .spawn(|| async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let echo = glommio::spawn_local(async move {
                    let mut peer = TcpStream::connect(addr).await.unwrap();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = peer.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        peer.write_all(&buf[..n]).await.unwrap();
                    }
                });
                let (mut reader, mut writer) = split(listener.accept().await.unwrap());
                assert_eq!(reader.as_raw_fd(), writer.as_raw_fd());
                let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
                let expected = sent.clone();
                let read = glommio::spawn_local(async move {
                    let mut got = vec![0u8; expected.len()];
                    reader.read_exact(&mut got).await.unwrap();
                    assert!(got == expected);
                });
                writer.write_all(&sent).await.unwrap();
                read.await;
                writer.close().await.unwrap();
                drop(writer);
                echo.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
