//! Space held back in the data directory for the broker's own restart.
//!
//! A file of [`RESERVE_BYTES`] (`.space-reserve`), allocated at start while
//! the disk has room, as CockroachDB keeps its "emergency ballast". When
//! the partitions fill the disk, their appends fail (KAFKA_STORAGE_ERROR)
//! and the broker goes on; but a start needs a few blocks of its own: the
//! metadata log persists its Raft hard state as it elects itself (and
//! stops the process when it cannot, as Raft requires), recovery writes
//! indexes and checkpoints. A start that finds less free space than the
//! reserve holds removes the reserve first, so the broker comes up on a
//! disk its data filled; the next start made with room to spare
//! allocates it again.
//!
//! The space freed is not set apart for the broker's own files: appends
//! may take it too. A disk filled again that way, with the reserve gone,
//! fails the next start with the metadata log's error naming the file and
//! the reason (No space left on device).

use super::{Result, StorageError};
use std::path::Path;

/// The reserve file's name in the data directory.
pub const RESERVE_FILE: &str = ".space-reserve";

/// 8 MiB: what a start writes is the metadata log's hard state and a few
/// entries (bytes), the checkpoints (a line per partition) and rebuilt
/// indexes (8 to 12 bytes per 4 KiB of log after an unclean stop): a
/// few hundred KiB for thousands of partitions. The rest is margin.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// Bytes an unprivileged writer may still allocate on `dir`'s file system.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    disk_space(dir).map(|(_, available)| available)
}

/// Total bytes of `dir`'s file system, and those an unprivileged writer
/// may still allocate.
pub fn disk_space(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| {
        StorageError::io("statvfs", dir)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    // SAFETY: statvfs fills the struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(StorageError::io("statvfs", dir)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok((
        st.f_blocks.saturating_mul(st.f_frsize),
        st.f_bavail.saturating_mul(st.f_frsize),
    ))
}

/// What [`at_start`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum AtStart {
    /// The reserve is there and the disk has room besides.
    Kept,
    /// The disk had less free space than the reserve: it was removed.
    Released { free: u64 },
    /// There was none and the disk has room for it: it was allocated.
    Made,
    /// There is none and the disk has too little room to allocate it.
    Lacking { free: u64 },
}

/// Removes the reserve of `data_dir` if its disk has less free space than
/// the reserve holds, or allocates it if missing and the disk has twice
/// that free (so that allocating it does not itself fill the disk).
pub fn at_start(data_dir: &Path) -> Result<AtStart> {
    let path = data_dir.join(RESERVE_FILE);
    let free = free_bytes(data_dir)?;
    if path.exists() {
        if free >= RESERVE_BYTES {
            return Ok(AtStart::Kept);
        }
        std::fs::remove_file(&path).map_err(StorageError::io("remove space reserve", &path))?;
        tracing::warn!(path = %path.display(), free_bytes = free, reserve_bytes = RESERVE_BYTES,
            "the disk is (nearly) full: removed the space reserve so that the broker can start; free space, then restart to allocate it again");
        return Ok(AtStart::Released { free });
    }
    if free < 2 * RESERVE_BYTES {
        tracing::warn!(path = %path.display(), free_bytes = free, reserve_bytes = RESERVE_BYTES,
            "too little free space to allocate the space reserve");
        return Ok(AtStart::Lacking { free });
    }
    allocate(&path).inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
    })?;
    Ok(AtStart::Made)
}

/// Allocates the reserve's blocks: `fallocate`, or written zeros where
/// the file system does not allocate ahead.
fn allocate(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut f =
        std::fs::File::create(path).map_err(StorageError::io("create space reserve", path))?;
    // SAFETY: a plain syscall on a descriptor this function owns.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) };
    if r != 0 {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
            f.write_all(&zeros)
                .map_err(StorageError::io("write space reserve", path))?;
        }
    }
    f.sync_all()
        .map_err(StorageError::io("fsync space reserve", path))?;
    super::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        if free_bytes(dir.path()).unwrap() < 2 * RESERVE_BYTES {
            // A nearly full build machine: what it does there is `Lacking`.
            assert!(matches!(
                at_start(dir.path()).unwrap(),
                AtStart::Lacking { .. }
            ));
            return;
        }
        assert_eq!(at_start(dir.path()).unwrap(), AtStart::Made);
        let len = std::fs::metadata(dir.path().join(RESERVE_FILE))
            .unwrap()
            .len();
        assert_eq!(len, RESERVE_BYTES);
        assert_eq!(at_start(dir.path()).unwrap(), AtStart::Kept);
    }
}
