//! A FUSE file system for power-loss tests: every operation passes through
//! to a backing directory, except that a file's data written since its last
//! `fsync`/`fdatasync` is held apart, in memory, and is thrown away when
//! the power "goes out". Directory operations (create, mkdir, rename,
//! unlink) reach the backing directory at once, as a journalled file
//! system commits them; data and truncation wait for a sync, the harshest
//! outcome ext4 allows.
//!
//! [`LazyMount::lose_power`] unmounts (which empties the kernel's page
//! cache of the mount, as a reboot does), drops every unsynced write and
//! mounts the backing directory again.
//!
//! Switches fail syncs or writes under a path with EIO, as a failing disk
//! does, or hold syncs under a path for a while, as a stalling one does.
// Each test crate that mounts it uses some of its switches.
#![allow(dead_code)]

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Attributes are never cached by the kernel: sizes change under it.
const TTL: Duration = Duration::ZERO;

/// What the file system knows, shared with the test.
#[derive(Default)]
struct State {
    /// Inode → path relative to the backing directory ("" is the root).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    /// Whole contents of files written (or truncated) since their last
    /// sync, by inode.
    unsynced: HashMap<u64, Vec<u8>>,
    /// Bytes written and syncs seen, for the test to check that the
    /// broker ran on this file system at all.
    written: u64,
    syncs: u64,
    /// Syncs of files under this relative path fail with EIO, as a disk
    /// failing writeback makes them.
    failing_syncs: Option<PathBuf>,
    /// Writes of files under this relative path fail with EIO.
    failing_writes: Option<PathBuf>,
    /// Syncs of files under this relative path are held this long, or
    /// until the switch is turned off, before they go ahead.
    stalling_syncs: Option<(PathBuf, Duration)>,
    /// Syncs held by `stalling_syncs` right now, and in all.
    stalled_now: u64,
    stalled: u64,
}

/// The state and what a held sync waits on: the switch turned off.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stall_lifted: Condvar,
}

struct LazyFs {
    backing: PathBuf,
    shared: Arc<Shared>,
}

/// A mounted lazy file system.
pub struct LazyMount {
    pub mountpoint: PathBuf,
    backing: PathBuf,
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
}

impl LazyMount {
    /// Mounts `backing` at `mountpoint` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> LazyMount {
        let mut m = LazyMount {
            mountpoint: mountpoint.to_path_buf(),
            backing: backing.to_path_buf(),
            shared: Arc::default(),
            session: None,
        };
        m.attach();
        m
    }

    fn attach(&mut self) {
        let mut state = State {
            next_inode: 2,
            ..State::default()
        };
        state.paths.insert(1, PathBuf::new());
        state.inodes.insert(PathBuf::new(), 1);
        *self.shared.state.lock().unwrap() = state;
        let fs = LazyFs {
            backing: self.backing.clone(),
            shared: self.shared.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lazyfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config)
            .unwrap_or_else(|e| panic!("mounting the lazy file system: {e}"));
        self.session = Some(session);
    }

    /// The power goes out: the mount goes away with its page cache, every
    /// write not yet synced is lost, and the disk is mounted again.
    /// Returns how many files lost data.
    pub fn lose_power(&mut self) -> usize {
        let lost = self.shared.state.lock().unwrap().unsynced.len();
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        self.attach();
        lost
    }

    /// Makes every `fsync`/`fdatasync` of a file under `rel` (relative to
    /// the mount point) fail with EIO, or none with `None`. The data stays
    /// unsynced, readable until the power goes, as a page cache keeps
    /// pages whose writeback failed.
    pub fn fail_syncs_under(&self, rel: Option<&Path>) {
        self.shared.state.lock().unwrap().failing_syncs = rel.map(Path::to_path_buf);
    }

    /// Makes every write to a file under `rel` fail with EIO, or none
    /// with `None`.
    pub fn fail_writes_under(&self, rel: Option<&Path>) {
        self.shared.state.lock().unwrap().failing_writes = rel.map(Path::to_path_buf);
    }

    /// Holds every `fsync`/`fdatasync` of a file under `rel` (relative
    /// to the mount point) for `hold`, or until the switch is turned off
    /// with `None`, whichever comes first; then the sync goes ahead. A
    /// held sync does not occupy the file system's threads: everything
    /// else, other files' syncs included, is served meanwhile.
    pub fn stall_syncs_under(&self, rel: Option<&Path>, hold: Duration) {
        let mut s = self.shared.state.lock().unwrap();
        s.stalling_syncs = rel.map(|r| (r.to_path_buf(), hold));
        if rel.is_none() {
            self.shared.stall_lifted.notify_all();
        }
    }

    /// (syncs held right now, syncs held since the mount).
    pub fn stalled_syncs(&self) -> (u64, u64) {
        let s = self.shared.state.lock().unwrap();
        (s.stalled_now, s.stalled)
    }

    /// (bytes written, syncs) through the file system since it was mounted.
    pub fn traffic(&self) -> (u64, u64) {
        let s = self.shared.state.lock().unwrap();
        (s.written, s.syncs)
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn kind_of(m: &std::fs::Metadata) -> FileType {
    if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.max(0) as u32)
}

impl LazyFs {
    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn path_of(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let s = self.shared.state.lock().unwrap();
        s.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn inode_for(&self, rel: &Path) -> u64 {
        let mut s = self.shared.state.lock().unwrap();
        if let Some(i) = s.inodes.get(rel) {
            return *i;
        }
        let i = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(rel.to_path_buf(), i);
        s.paths.insert(i, rel.to_path_buf());
        i
    }

    fn attr(&self, ino: u64, rel: &Path) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(self.full(rel)).map_err(errno)?;
        let size = {
            let s = self.shared.state.lock().unwrap();
            s.unsynced.get(&ino).map_or(m.len(), |d| d.len() as u64)
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.ctime(), m.ctime_nsec()),
            kind: kind_of(&m),
            perm: (m.permissions().mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entry(&self, rel: PathBuf, reply: ReplyEntry) {
        let ino = self.inode_for(&rel);
        match self.attr(ino, &rel) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// The file's unsynced contents, loaded from the backing file the
    /// first time it changes after a sync.
    fn with_unsynced<T>(
        &self,
        ino: u64,
        rel: &Path,
        f: impl FnOnce(&mut Vec<u8>) -> T,
    ) -> Result<T, Errno> {
        let mut s = self.shared.state.lock().unwrap();
        let data = match s.unsynced.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(std::fs::read(self.full(rel)).map_err(errno)?)
            }
        };
        Ok(f(data))
    }

    fn forget_path(&self, rel: &Path) {
        let mut s = self.shared.state.lock().unwrap();
        if let Some(i) = s.inodes.remove(rel) {
            s.paths.remove(&i);
            s.unsynced.remove(&i);
        }
    }
}

/// Waits while syncs under `rel` are held, at most `hold`.
fn stall(shared: &Shared, rel: &Path, hold: Duration) {
    let until = Instant::now() + hold;
    let mut s = shared.state.lock().unwrap();
    s.stalled_now += 1;
    s.stalled += 1;
    loop {
        let held = s
            .stalling_syncs
            .as_ref()
            .is_some_and(|(under, _)| rel.starts_with(under));
        let left = until.saturating_duration_since(Instant::now());
        if !held || left.is_zero() {
            break;
        }
        s = shared.stall_lifted.wait_timeout(s, left).unwrap().0;
    }
    s.stalled_now -= 1;
}

/// Makes a file's unsynced data durable in the backing file, or fails
/// with EIO when syncs under its path are switched to fail.
fn sync(shared: &Shared, backing: &Path, ino: u64, rel: &Path) -> Result<(), Errno> {
    let mut s = shared.state.lock().unwrap();
    s.syncs += 1;
    if s.failing_syncs.as_ref().is_some_and(|f| rel.starts_with(f)) {
        return Err(Errno::EIO);
    }
    let Some(data) = s.unsynced.remove(&ino) else {
        return Ok(());
    };
    let synced = std::fs::OpenOptions::new()
        .write(true)
        .open(backing.join(rel))
        .and_then(|mut f| {
            f.set_len(0)?;
            f.write_all(&data)?;
            f.sync_data()
        });
    synced.map_err(|e| {
        s.unsynced.insert(ino, data);
        errno(e)
    })
}

fn reply_sync(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.path_of(parent) {
            Ok(p) => self.entry(p.join(name), reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path_of(ino).and_then(|p| self.attr(ino.0, &p)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if let Some(mode) = mode {
            let perms = std::fs::Permissions::from_mode(mode);
            if let Err(e) = std::fs::set_permissions(self.full(&rel), perms) {
                return reply.error(errno(e));
            }
        }
        if let Some(size) = size {
            if let Err(e) = self.with_unsynced(ino.0, &rel, |d| d.resize(size as usize, 0)) {
                return reply.error(e);
            }
        }
        match self.attr(ino.0, &rel) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = match self.path_of(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        if let Err(e) = std::fs::create_dir(self.full(&rel)) {
            return reply.error(errno(e));
        }
        let _ = std::fs::set_permissions(self.full(&rel), std::fs::Permissions::from_mode(mode));
        self.entry(rel, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.path_of(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_file(self.full(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.path_of(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_dir(self.full(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.path_of(parent), self.path_of(newparent)) {
            (Ok(a), Ok(b)) => (a.join(name), b.join(newname)),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if let Err(e) = std::fs::rename(self.full(&from), self.full(&to)) {
            return reply.error(errno(e));
        }
        let mut s = self.shared.state.lock().unwrap();
        // Whatever `to` was is gone; `from`'s inode (a directory's whole
        // subtree) now lives under `to`.
        if let Some(old) = s.inodes.remove(&to) {
            s.paths.remove(&old);
            s.unsynced.remove(&old);
        }
        let moved: Vec<(PathBuf, u64)> = s
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in moved {
            let rest = p.strip_prefix(&from).expect("under from");
            // `join("")` would add a trailing slash.
            let new = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            s.inodes.remove(&p);
            s.inodes.insert(new.clone(), i);
            s.paths.insert(i, new);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path_of(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        {
            let s = self.shared.state.lock().unwrap();
            if let Some(d) = s.unsynced.get(&ino.0) {
                let start = (offset as usize).min(d.len());
                let end = (start + size as usize).min(d.len());
                return reply.data(&d[start..end]);
            }
        }
        let file = match std::fs::File::open(self.full(&rel)) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let failing = self.shared.state.lock().unwrap().failing_writes.clone();
        if failing.is_some_and(|f| rel.starts_with(f)) {
            return reply.error(Errno::EIO);
        }
        let written = self.with_unsynced(ino.0, &rel, |d| {
            let end = offset as usize + data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
        });
        match written {
            Ok(()) => {
                self.shared.state.lock().unwrap().written += data.len() as u64;
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing a file does not make it durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let hold = {
            let s = self.shared.state.lock().unwrap();
            s.stalling_syncs
                .as_ref()
                .filter(|(under, _)| rel.starts_with(under))
                .map(|(_, hold)| *hold)
        };
        let Some(hold) = hold else {
            return reply_sync(sync(&self.shared, &self.backing, ino.0, &rel), reply);
        };
        // Held on a thread of its own, so that the file system's two
        // threads go on serving everything else.
        let (shared, backing) = (self.shared.clone(), self.backing.clone());
        std::thread::spawn(move || {
            stall(&shared, &rel, hold);
            reply_sync(sync(&shared, &backing, ino.0, &rel), reply);
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are already on the backing disk.
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            return reply.ok();
        }
        let grown = self.with_unsynced(ino.0, &rel, |d| {
            let end = (offset + length) as usize;
            if d.len() < end {
                d.resize(end, 0);
            }
        });
        match grown {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path_of(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let rel = match self.path_of(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let listing = match std::fs::read_dir(self.full(&rel)) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<(std::ffi::OsString, FileType)> = listing
            .flatten()
            .filter_map(|e| Some((e.file_name(), kind_of(&e.metadata().ok()?))))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let child = self.inode_for(&rel.join(&name));
            entries.push((child, kind, name));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let rel = match self.path_of(parent) {
            Ok(p) => p.join(name),
            Err(e) => return reply.error(e),
        };
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.full(&rel));
        if let Err(e) = created {
            return reply.error(errno(e));
        }
        let _ = std::fs::set_permissions(self.full(&rel), std::fs::Permissions::from_mode(mode));
        let ino = self.inode_for(&rel);
        match self.attr(ino, &rel) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}
