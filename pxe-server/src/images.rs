//! Boot images: files under the TFTP root, loaded once and shared by every transfer.
//!
//! # Design
//! - **Resolution.** The root is held open as an `O_PATH` directory fd. A request's name is
//!   normalized (`\` -> `/`, `./` and duplicate slashes collapsed; absolute names, `..`, NUL
//!   and empty names refused) and opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//!   relative to that fd, so the kernel refuses any path, including through a symlink, that
//!   leaves the root. Relative symlinks that stay inside the root work; absolute symlinks are
//!   refused even when they point inside the root (a `RESOLVE_BENEATH` rule). Only regular
//!   files are served; the open uses `O_NONBLOCK` so a FIFO cannot block the caller. While the
//!   daemon runs as root, only world-readable files (mode `o+r`) are served, as tftp-hpa does:
//!   a private file, or a hard link to one placed under the root (which `RESOLVE_BENEATH`
//!   cannot see), is an access violation.
//! - **Snapshots.** Serving an mmap of the file itself would SIGBUS the server if the file is
//!   truncated while a transfer reads it. Instead the file is copied kernel-side
//!   (`copy_file_range`, falling back to `sendfile`, then to read/write) into a memfd, which is
//!   then sealed against shrinking, growing and writing and mapped read-only. Nothing can change
//!   or shrink those pages, so a transfer's bytes stay valid and constant for as long as it
//!   holds its `Arc<Image>`. The image is as long as what was actually copied.
//! - **Cache.** Snapshots are cached per normalized name together with the file's identity
//!   (dev, inode, size, mtime, ctime, nanoseconds). Every open re-resolves the name and
//!   `fstat`s it: the same identity returns the cached `Arc`, a different one (file replaced by
//!   rename or rewritten) takes a new snapshot for new transfers while running transfers keep
//!   the old one. A snapshot whose identity changed while it was copied is served but not
//!   cached (retried a few times first). Concurrent first requests for the same name wait for
//!   a single snapshot instead of copying the file once each (one lock per name).
//! - **Bound.** When the cached snapshots exceed [`MAX_CACHED_BYTES`], entries that no
//!   transfer holds any more are evicted (snapshots in use are never dropped from under a
//!   transfer; they go away with their last `Arc`).
//! - **Limits of the identity check.** A file rewritten in place to the same size within one
//!   tick of the file system's timestamp clock, right after a snapshot, is not detected until
//!   its next change; replace files by rename (the usual way) to be exact.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Total bytes of cached snapshots above which unused ones are evicted (4 GiB).
pub const MAX_CACHED_BYTES: u64 = 4 << 30;

/// Times a snapshot is retaken when the file changed while it was being copied.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// Times `openat2` is retried when it reports a concurrent rename (`EAGAIN`).
const OPEN_ATTEMPTS: usize = 4;

/// Why a requested name cannot be served. Each maps to a TFTP error code.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `..`, absolute path, NUL, not a regular file, no permission ...
    #[error("access violation: {0}")]
    AccessViolation(&'static str),
    /// The path resolves outside the root (a symlink leads out): a traversal attempt.
    #[error("access violation: {}", OpenError::LEAVES_ROOT)]
    LeavesRoot,
    #[error("file not found")]
    NotFound,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl OpenError {
    /// The reason given to the client for [`OpenError::LeavesRoot`].
    pub const LEAVES_ROOT: &'static str = "path leaves the root";

    /// Why access was refused, for an access violation of either kind.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            OpenError::AccessViolation(why) => Some(why),
            OpenError::LeavesRoot => Some(Self::LEAVES_ROOT),
            OpenError::NotFound | OpenError::Io(_) => None,
        }
    }
}

/// One immutable version of a file.
pub struct Image {
    data: ImageData,
    netascii: OnceLock<Box<[u8]>>,
    version: Option<ImageVersion>,
}

/// The file version a snapshot holds, known when the file did not change while it was copied:
/// the bytes of two images with the same version are the same (HTTP's validators, `ETag` and
/// `Last-Modified`, come from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageVersion {
    pub ino: u64,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

enum ImageData {
    /// Read-only map of a sealed memfd snapshot.
    Mapped(memmap2::Mmap),
    /// Bytes held in memory (tests, the simulator, tiny files).
    Owned(Box<[u8]>),
}

impl Image {
    /// An image over bytes already in memory.
    pub fn from_bytes(bytes: impl Into<Box<[u8]>>) -> Image {
        Image {
            data: ImageData::Owned(bytes.into()),
            netascii: OnceLock::new(),
            version: None,
        }
    }

    /// `self` marked as the bytes of file version `version`.
    pub fn with_version(mut self, version: ImageVersion) -> Image {
        self.version = Some(version);
        self
    }

    /// The file version these bytes are, if known (see [`ImageVersion`]).
    pub fn version(&self) -> Option<ImageVersion> {
        self.version
    }

    /// An image over a read-only map that nothing can shrink (see the module docs).
    pub(crate) fn from_sealed_map(map: memmap2::Mmap) -> Image {
        Image {
            data: ImageData::Mapped(map),
            netascii: OnceLock::new(),
            version: None,
        }
    }

    /// The file's bytes.
    pub fn octets(&self) -> &[u8] {
        match &self.data {
            ImageData::Mapped(m) => m,
            ImageData::Owned(b) => b,
        }
    }

    /// The file in netascii form (LF -> CR LF, CR -> CR NUL), computed once on first use.
    pub fn netascii(&self) -> &[u8] {
        self.netascii.get_or_init(|| to_netascii(self.octets()))
    }

    pub fn len(&self) -> usize {
        self.octets().len()
    }

    pub fn is_empty(&self) -> bool {
        self.octets().is_empty()
    }
}

/// RFC 764 netascii: LF becomes CR LF, a bare CR becomes CR NUL.
pub fn to_netascii(src: &[u8]) -> Box<[u8]> {
    let extra = src.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(src.len() + extra);
    for &b in src {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out.into_boxed_slice()
}

/// The shared, thread-safe cache of images under one root directory.
pub struct ImageStore {
    root: OwnedFd,
    root_path: PathBuf,
    slots: Mutex<HashMap<Box<[u8]>, Arc<Slot>>>,
    max_cached_bytes: u64,
}

/// One cached name. Its own lock serializes snapshots of that name only.
#[derive(Default)]
struct Slot {
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    identity: Identity,
    image: Arc<Image>,
}

/// What makes a version of a file: when any of it changes, the file is snapshotted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl ImageStore {
    /// Opens the root directory (kept open as a dirfd; every lookup is resolved beneath it).
    pub fn new(root: PathBuf) -> std::io::Result<ImageStore> {
        let fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("TFTP root {}: {e}", root.display()),
            )
        })?;
        Ok(ImageStore {
            root: fd,
            root_path: root,
            slots: Mutex::new(HashMap::new()),
            max_cached_bytes: MAX_CACHED_BYTES,
        })
    }

    /// The root directory as configured (for logs).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Resolves a request's raw file name beneath the root and returns the current image.
    /// `\` is accepted as `/`; `..`, absolute names, NUL bytes and symlinks leaving the root are
    /// refused with `AccessViolation`.
    pub fn open(&self, name: &[u8]) -> Result<Arc<Image>, OpenError> {
        let key = normalize(name)?;
        let file = self.open_beneath(&key)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(OpenError::AccessViolation(not_regular_reason(&meta)));
        }
        if !readable_by_the_service(meta.mode(), rustix::process::geteuid().is_root()) {
            return Err(OpenError::AccessViolation(NOT_WORLD_READABLE));
        }
        let identity = Identity::of(&meta);

        let slot = {
            let mut slots = lock(&self.slots);
            Arc::clone(slots.entry(key).or_default())
        };
        let image = {
            let mut cached = lock(&slot.cached);
            if let Some(c) = cached.as_ref().filter(|c| c.identity == identity) {
                return Ok(Arc::clone(&c.image));
            }
            let (image, stable) = snapshot_stable(&file, identity)?;
            let image = Arc::new(match stable {
                Some(id) => image.with_version(ImageVersion {
                    ino: id.ino,
                    size: id.size,
                    mtime_ns: id.mtime_ns,
                }),
                None => image,
            });
            match stable {
                Some(identity) => {
                    *cached = Some(Cached {
                        identity,
                        image: Arc::clone(&image),
                    })
                }
                None => tracing::debug!(
                    file = %String::from_utf8_lossy(name),
                    "file changed while being snapshotted; serving an uncached snapshot"
                ),
            }
            image
        };
        self.evict_unused();
        Ok(image)
    }

    fn open_beneath(&self, rel: &[u8]) -> Result<File, OpenError> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::OsStr::from_bytes(rel);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let res = rustix::fs::openat2(
                &self.root,
                path,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            );
            return match res {
                Ok(fd) => Ok(File::from(fd)),
                Err(rustix::io::Errno::AGAIN) if attempts < OPEN_ATTEMPTS => continue,
                Err(e) => Err(map_open_errno(e)),
            };
        }
    }

    /// Drops cached snapshots no transfer holds until the cache fits `max_cached_bytes`.
    /// Slots another thread is busy with are left alone (their size is not counted).
    fn evict_unused(&self) {
        let mut slots = lock(&self.slots);
        let size_of = |slot: &Slot| -> Option<(u64, bool)> {
            let cached = slot.cached.try_lock().ok()?;
            Some(match cached.as_ref() {
                Some(c) => (c.image.len() as u64, Arc::strong_count(&c.image) == 1),
                None => (0, true),
            })
        };
        let mut total: u64 = slots
            .values()
            .filter_map(|s| size_of(s))
            .map(|(n, _)| n)
            .sum();
        if total <= self.max_cached_bytes {
            return;
        }
        slots.retain(|_, slot| {
            if total <= self.max_cached_bytes {
                return true;
            }
            match size_of(slot) {
                Some((len, true)) => {
                    total -= len;
                    false
                }
                _ => true,
            }
        });
        if total > self.max_cached_bytes {
            tracing::warn!(
                cached_bytes = total,
                limit = self.max_cached_bytes,
                "image cache over its limit: every cached image is in use"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the map or a slot half-updated
    // (each update is a single assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The relative path a request names, or why it is refused.
fn normalize(name: &[u8]) -> Result<Box<[u8]>, OpenError> {
    if name.is_empty() {
        return Err(OpenError::AccessViolation("empty file name"));
    }
    if name.contains(&0) {
        return Err(OpenError::AccessViolation("NUL byte in file name"));
    }
    let is_sep = |b: &u8| *b == b'/' || *b == b'\\';
    if is_sep(&name[0]) {
        return Err(OpenError::AccessViolation("absolute file name"));
    }
    let mut out = Vec::with_capacity(name.len());
    for comp in name.split(is_sep) {
        match comp {
            b"" | b"." => {}
            b".." => return Err(OpenError::AccessViolation("\"..\" in file name")),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        return Err(OpenError::AccessViolation("empty file name"));
    }
    Ok(out.into_boxed_slice())
}

fn map_open_errno(e: rustix::io::Errno) -> OpenError {
    use rustix::io::Errno;
    match e {
        Errno::NOENT | Errno::NOTDIR => OpenError::NotFound,
        Errno::XDEV => OpenError::LeavesRoot,
        Errno::ACCESS | Errno::PERM => OpenError::AccessViolation("permission denied"),
        Errno::LOOP => OpenError::AccessViolation("too many or forbidden symbolic links"),
        Errno::NAMETOOLONG => OpenError::AccessViolation("file name too long"),
        Errno::NXIO | Errno::NODEV | Errno::OPNOTSUPP => {
            OpenError::AccessViolation("not a regular file")
        }
        Errno::ISDIR => OpenError::AccessViolation("is a directory"),
        e => OpenError::Io(e.into()),
    }
}

/// The refusal of a file that is not world-readable while the daemon runs as root.
pub const NOT_WORLD_READABLE: &str = "not world-readable";

/// A file the service may serve, as tftp-hpa decides: running as root (which may open
/// anything), only a world-readable one, so that a file the administrator kept private (0600,
/// 0640, a hard link to /etc/shadow placed under the root) is never sent; running as another
/// user, whatever the open allowed (the kernel checked that user's permissions).
fn readable_by_the_service(mode: u32, running_as_root: bool) -> bool {
    !running_as_root || mode & 0o004 != 0
}

fn not_regular_reason(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "is a directory"
    } else if t.is_fifo() {
        "is a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "is a device"
    } else {
        "not a regular file"
    }
}

/// Snapshots `file`, retrying while it changes under the copy. Returns the image and, when the
/// file's identity was the same before and after the copy, that identity (cacheable).
fn snapshot_stable(
    file: &File,
    mut before: Identity,
) -> std::io::Result<(Image, Option<Identity>)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let image = snapshot(file, before.size)?;
        let after = Identity::of(&file.metadata()?);
        if after == before {
            return Ok((image, Some(after)));
        }
        if attempt >= SNAPSHOT_ATTEMPTS {
            return Ok((image, None));
        }
        before = after;
    }
}

/// Copies at most `size` bytes of `file` (fewer if it ends sooner) into a sealed, read-only
/// mapped memfd.
fn snapshot(file: &File, size: u64) -> std::io::Result<Image> {
    if size == 0 {
        return Ok(Image::from_bytes(Vec::new()));
    }
    let memfd = rustix::fs::memfd_create(
        "pxe-image",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?;
    let mut memfd = File::from(memfd);
    let copied = copy_into(file, &mut memfd, size, CopyMethod::FileRange)?;
    if copied == 0 {
        return Ok(Image::from_bytes(Vec::new()));
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        rustix::fs::SealFlags::SHRINK
            | rustix::fs::SealFlags::GROW
            | rustix::fs::SealFlags::WRITE
            | rustix::fs::SealFlags::SEAL,
    )?;
    // SAFETY: the memfd is private to this process (no other fd or path reaches it) and sealed
    // above against shrinking, growing and writing, with the seals themselves sealed; no writable
    // mapping of it exists (F_SEAL_WRITE would have failed otherwise). So the mapped pages can
    // never change or disappear while the map lives: no SIGBUS, no data race.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len(copied as usize)
            .map(&memfd)?
    };
    Ok(Image::from_sealed_map(map))
}

/// How [`copy_into`] moves bytes; each falls back to the next where the kernel refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyMethod {
    /// `copy_file_range`: fails with EXDEV across file systems (disk -> memfd) on current
    /// kernels, works from tmpfs.
    FileRange,
    /// `sendfile` to the memfd: works for any regular source file since Linux 2.6.33.
    SendFile,
    /// read/write through a userspace buffer.
    ReadWrite,
}

/// Copies up to `limit` bytes from the start of `src` to the (empty) `dst`, kernel-side when
/// it can. Returns the bytes copied; stops early at end of file.
fn copy_into(
    src: &File,
    dst: &mut File,
    limit: u64,
    mut method: CopyMethod,
) -> std::io::Result<u64> {
    use rustix::io::Errno;
    const CHUNK: u64 = 1 << 30;
    let mut off_in: u64 = 0;
    let mut off_out: u64 = 0;
    while off_in < limit {
        let want = (limit - off_in).min(CHUNK) as usize;
        let res = match method {
            CopyMethod::FileRange => {
                rustix::fs::copy_file_range(src, Some(&mut off_in), &*dst, Some(&mut off_out), want)
            }
            // Writes at dst's file position, which starts at 0 and is only moved by sendfile.
            CopyMethod::SendFile => rustix::fs::sendfile(&*dst, src, Some(&mut off_in), want),
            CopyMethod::ReadWrite => return copy_userspace(src, dst, limit),
        };
        match res {
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => {}
            // Refused before anything was copied: the next method starts from scratch.
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) if off_in == 0 => {
                method = match method {
                    CopyMethod::FileRange => CopyMethod::SendFile,
                    _ => CopyMethod::ReadWrite,
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(off_in)
}

/// Last resort: read/write through a buffer.
fn copy_userspace(mut src: &File, dst: &mut File, limit: u64) -> std::io::Result<u64> {
    use std::io::Seek;
    src.seek(std::io::SeekFrom::Start(0))?;
    let n = std::io::copy(&mut src.take(limit), dst)?;
    dst.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests;
