//! Sending file regions to a socket with `sendfile(2)`: record bytes go
//! from the page cache to the socket without passing through user space.
//!
//! The socket is non-blocking. When its send buffer is full, `sendfile`
//! answers EAGAIN; the wait for room is then done by writing the next small
//! piece of the region through glommio's ordinary (io_uring-polled) write,
//! which parks the task until the socket is writable. Those few copied
//! bytes are counted apart, so the share sent zero-copy can be shown.

use super::socket::Half;
use crate::shard::Stats;
use crate::storage::segment::FileRegion;
use futures::AsyncWriteExt;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};

/// Bytes copied to wait for a full socket to drain.
const WAIT_CHUNK_BYTES: usize = 8 * 1024;

/// Puts a socket in non-blocking mode (glommio itself polls it through io_uring).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Corks (`on`) or uncorks a TCP socket: while corked the kernel holds
/// partial segments, so the parts of one answer (headers written, record
/// bytes sent from files) leave as full segments instead of one packet per
/// part; uncorking sends what is held. On loopback every packet costs the
/// sender the receiver's processing too, and wakes the receiver once more.
pub fn cork(fd: RawFd, on: bool) -> io::Result<()> {
    let value: libc::c_int = on.into();
    // SAFETY: setsockopt on a descriptor we own, with a pointer to an int
    // that lives across the call and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends all of `region` to `stream`.
pub async fn send_region(stream: &mut Half, region: &FileRegion, stats: &Stats) -> io::Result<()> {
    let socket = stream.as_raw_fd();
    let file = region.file.as_raw_fd();
    let mut offset = region.position as libc::off_t;
    let end = offset + region.len as libc::off_t;
    while offset < end {
        let want = (end - offset) as usize;
        // SAFETY: both descriptors are open for the duration of the call;
        // the kernel advances `offset`.
        let n = unsafe { libc::sendfile(socket, file, &mut offset, want) };
        if n > 0 {
            stats
                .sendfile_bytes
                .set(stats.sendfile_bytes.get() + n as u64);
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than the region being sent",
            ));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                let chunk = want.min(WAIT_CHUNK_BYTES);
                let mut buf = vec![0u8; chunk];
                region.file.read_exact_at(&mut buf, offset as u64)?;
                stream.write_all(&buf).await?;
                offset += chunk as libc::off_t;
                stats
                    .copied_bytes
                    .set(stats.copied_bytes.get() + chunk as u64);
            }
            _ => return Err(e),
        }
    }
    Ok(())
}
