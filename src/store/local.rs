//! Local files: listing a source tree as it is walked, reading files, and writing
//! outputs that appear only when whole.
//!
//! What this module promises, and how:
//! - **Nothing is left out silently.** A directory that cannot be read (removed
//!   mid-run, no permission, a path too long) is reported as a failure of that subtree
//!   and the walk goes on; names that are not UTF-8 are listed like any other.
//! - **A source is read as it was when opened.** A file that grows, shrinks or is
//!   modified while it is read fails with [`SourceChanged`] instead of producing a
//!   message of something that never existed.
//! - **Outputs appear only whole.** An output is written to a temporary
//!   `.sealpipe-*.partial` file beside its destination and renamed into place on
//!   commit. The writer holds an exclusive lock on that file while it lives, so after a
//!   crash (`kill -9` cannot be caught) the next run over the destination can tell a
//!   stale partial file, which it removes, from one a live run is writing, which it leaves.
//!   Listings never take partial files for sources.
//! - **Outputs never gain privileges.** An output gets the source's read, write and
//!   execute bits only, filtered by the umask ([`output_mode`]).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::BytesMut;

use super::{
    Body, BoxFuture, ListItem, Listed, ObjectId, ObjectMeta, RelativeName, Sink, SourceInfo,
    SourceObject,
};
use crate::bridge;

/// Where locks are not available, a partial output untouched for this long is taken
/// for stale: live writers write continuously, and a stall this long fails the object
/// anyway (S3 read timeouts are a minute).
const STALE_WITHOUT_LOCKS: std::time::Duration = std::time::Duration::from_secs(3600);

/// Temporary outputs are named `.sealpipe-XXXXXX.partial`.
const PARTIAL_PREFIX: &str = ".sealpipe-";
const PARTIAL_SUFFIX: &str = ".partial";

/// This process's partial outputs are named `.sealpipe-TAG-XXXXXX.partial`, with a
/// random tag, so its own cleaner (which runs while the job writes) passes over them:
/// they are live, and their writers remove them if they fail.
fn own_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let mut tag = [0u8; 4];
        // Without randomness the tag is still distinct from other live processes'.
        if crate::crypto::random_bytes(&mut tag).is_err() {
            tag = std::process::id().to_be_bytes();
        }
        format!("{PARTIAL_PREFIX}{}-", hex::encode(tag))
    })
}

/// Whether a file name is one of sealpipe's temporary outputs.
pub fn is_partial_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.len() > PARTIAL_PREFIX.len() + PARTIAL_SUFFIX.len()
        && name.starts_with(PARTIAL_PREFIX.as_bytes())
        && name.ends_with(PARTIAL_SUFFIX.as_bytes())
}

/// Lists `source` (a single file, or every regular file below a directory, in sorted
/// order), handing each entry to `emit` as it is found.
///
/// Entries that are not regular files (symlinks, sockets, devices) and sealpipe's own
/// temporary files are reported as skipped, never followed or read. A directory that
/// cannot be read is reported as [`ListItem::Invalid`] and the walk continues with the
/// rest of the tree. Fails only when `source` itself is not a file or a directory.
pub fn list_local(
    source: &Path,
    mut emit: impl FnMut(ListItem) -> ControlFlow<()>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(source)?;
    if meta.is_file() {
        let name = source.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "source has no file name")
        })?;
        let _ = emit(ListItem::Object(listed(source, Path::new(name), &meta)));
        return Ok(());
    }
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; sealpipe never follows symbolic links: give the \
                 path it points to",
                crate::escape::path(source)
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file nor a directory (a device, FIFO or socket)",
                crate::escape::path(source)
            ),
        ));
    }
    for entry in walkdir::WalkDir::new(source).sort_by_file_name() {
        let item = match entry {
            Ok(entry) if entry.file_type().is_dir() => continue,
            Ok(entry) => list_entry(source, &entry),
            Err(e) => unlistable(source, &e),
        };
        if emit(item).is_break() {
            break;
        }
    }
    Ok(())
}

/// One walked entry that is not a directory.
fn list_entry(source: &Path, entry: &walkdir::DirEntry) -> ListItem {
    let id = ObjectId::Local(entry.path().to_path_buf());
    if !entry.file_type().is_file() {
        return ListItem::Skipped {
            id,
            reason: "not a regular file (not followed)".into(),
        };
    }
    if is_partial_name(entry.file_name()) {
        return ListItem::Skipped {
            id,
            reason: "a temporary file of an unfinished sealpipe output (left by an \
                     interrupted run); never read as a source"
                .into(),
        };
    }
    // walkdir yields paths below its root.
    let relative = entry.path().strip_prefix(source).unwrap_or(entry.path());
    match entry.metadata() {
        Ok(meta) => ListItem::Object(listed(entry.path(), relative, &meta)),
        Err(e) => ListItem::Invalid {
            id,
            code: "ListingFailed",
            error: format!("cannot read the file's metadata: {}", walk_cause(&e)),
        },
    }
}

/// A walk error: a directory that could not be read, so nothing below it is listed.
fn unlistable(source: &Path, e: &walkdir::Error) -> ListItem {
    let path = e.path().unwrap_or(source).to_path_buf();
    ListItem::Invalid {
        id: ObjectId::Local(path),
        code: "ListingFailed",
        error: format!(
            "cannot list this directory: {}; nothing below it was processed",
            walk_cause(e)
        ),
    }
}

/// The OS error behind a walk error, without walkdir's repetition of the path.
fn walk_cause(e: &walkdir::Error) -> String {
    match e.io_error() {
        Some(io) => io.to_string(),
        None => e.to_string(),
    }
}

fn listed(path: &Path, relative: &Path, meta: &fs::Metadata) -> Listed {
    // Destinations mirror names with `/` separators (S3 keys); on Unix the bytes are
    // kept exactly, whatever they are.
    #[cfg(unix)]
    let relative = RelativeName::from(relative.as_os_str().to_os_string());
    #[cfg(not(unix))]
    let relative = RelativeName::from(
        relative
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/"),
    );
    Listed {
        id: ObjectId::Local(path.to_path_buf()),
        relative,
        size: Some(meta.len()),
        etag: Some(fingerprint(meta)),
    }
}

/// Local files have no ETag; size and modification time stand in for one, so a re-run
/// recognises outputs made from the same file.
fn fingerprint(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("local-{}-{mtime}", meta.len())
}

/// Bytes read from a file per chunk: large enough that each read is one system call
/// worth making, small enough that the chunks a body holds ahead stay small.
const READ_CHUNK: usize = 512 * 1024;

/// Opens a file to read. Its body fails with [`SourceChanged`] if the file does not end
/// exactly where it ended when opened, or was modified meanwhile.
pub async fn open_local(path: &Path) -> Result<SourceObject, crate::Error> {
    let path = path.to_path_buf();
    bridge::blocking("opening a file", move || {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file").into());
        }
        let body = LocalBody {
            file: Some(UnchangedFile {
                file,
                size: meta.len(),
                modified: meta.modified().ok(),
                read: 0,
            }),
        };
        Ok(SourceObject {
            info: SourceInfo {
                size: meta.len(),
                etag: fingerprint(&meta),
                version: None,
                meta: ObjectMeta {
                    mode: unix_mode(&meta),
                    ..Default::default()
                },
                head: bytes::Bytes::new(),
            },
            body: Box::new(body),
        })
    })
    .await?
}

/// A local source that changed while it was read: it grew, shrank, or its modification
/// time moved.
#[derive(Debug, thiserror::Error)]
#[error(
    "the file changed while it was read ({what}); nothing was written for it, a re-run reads the new contents"
)]
pub struct SourceChanged {
    what: String,
}

/// A file read to exactly the end it had when opened.
struct UnchangedFile {
    file: File,
    size: u64,
    modified: Option<SystemTime>,
    read: u64,
}

impl UnchangedFile {
    /// The next chunk, empty at the end.
    fn read_chunk(&mut self) -> Result<bytes::Bytes, crate::Error> {
        let changed = |what: String| crate::Error::SourceChanged(SourceChanged { what });
        // One byte more than is left, so growth shows without another call.
        let left = self.size.saturating_sub(self.read);
        let want =
            usize::try_from(left.saturating_add(1)).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
        let mut buf = bytes::BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(filled);
        self.read += filled as u64;
        if self.read > self.size {
            return Err(changed(format!(
                "it had {} bytes when opened and grew past that",
                self.size
            )));
        }
        if filled < want {
            if self.read != self.size {
                return Err(changed(format!(
                    "it had {} bytes when opened, {} when reading ended",
                    self.size, self.read
                )));
            }
            // Same length, but rewritten in place meanwhile?
            let now = self.file.metadata()?;
            if now.len() != self.size || now.modified().ok() != self.modified {
                return Err(changed("it was modified while it was read".into()));
            }
        }
        Ok(buf.freeze())
    }
}

/// A local file's body: chunks read on a blocking thread, one at a time.
struct LocalBody {
    /// `None` once the end was reached (or the file failed).
    file: Option<UnchangedFile>,
}

impl Body for LocalBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<bytes::Bytes>, crate::Error>> {
        Box::pin(async move {
            let Some(mut file) = self.file.take() else {
                return Ok(None);
            };
            let (file, chunk) = bridge::blocking("reading a file", move || {
                let chunk = file.read_chunk();
                (file, chunk)
            })
            .await?;
            let chunk = chunk?;
            // A short chunk is the last: the checks at the end passed.
            if chunk.len() == READ_CHUNK {
                self.file = Some(file);
            }
            Ok((!chunk.is_empty()).then_some(chunk))
        })
    }
}

#[cfg(unix)]
fn unix_mode(meta: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn unix_mode(_: &fs::Metadata) -> Option<u32> {
    None
}

/// Whether two paths name the same existing file (same device and inode): a hard
/// link, a bind mount or another spelling of one path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // `b` (an output) usually does not exist yet: then `a` needs no look.
        let Ok(b) = fs::metadata(b) else {
            return false;
        };
        fs::metadata(a).is_ok_and(|a| a.dev() == b.dev() && a.ino() == b.ino())
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// The permission bits an output file gets: the source's read, write and execute bits
/// (`source_mode`; `None` for S3 sources, which have none, means `rw-rw-rw-`), filtered
/// by the process's umask, as for any file the user creates. Setuid, setgid and sticky
/// bits are never kept, and ownership is the running user's: decrypting a setuid
/// binary's ciphertext as root must not produce a setuid root binary.
pub fn output_mode(source_mode: Option<u32>) -> u32 {
    source_mode.map_or(0o666, |m| m & 0o777) & !umask()
}

/// The process's file-creation mask, read once.
fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        // Linux says it; elsewhere, a file created with every bit shows what the mask
        // took away. If neither works, assume the strictest mask rather than none.
        umask_from_proc().or_else(umask_from_probe).unwrap_or(0o077)
    })
}

fn umask_from_proc() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
}

#[cfg(unix)]
fn umask_from_probe() -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let probe = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o777))
        .tempfile()
        .ok()?;
    let mode = probe.as_file().metadata().ok()?.permissions().mode();
    Some(0o777 & !mode)
}

#[cfg(not(unix))]
fn umask_from_probe() -> Option<u32> {
    None
}

/// An output being written under a temporary name in its destination directory. It
/// replaces the destination only on [`commit`](Self::commit); dropped, it is removed, so
/// a failure never leaves partial output behind. While it exists its writer holds an
/// exclusive lock on it (see [`remove_stale_partials`]).
pub struct StagedFile {
    temp: tempfile::NamedTempFile,
    destination: PathBuf,
}

impl StagedFile {
    /// Creates the temporary file (mode 0600, and missing parent directories).
    ///
    /// An existing destination must be a regular file: renaming over a device, pipe,
    /// socket or symbolic link would replace that node itself (think `/dev/null`).
    pub fn create(destination: &Path) -> io::Result<Self> {
        if let Ok(meta) = fs::symlink_metadata(destination)
            && !meta.is_file()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "destination {} exists and is not a regular file; sealpipe replaces \
                     only regular files",
                    crate::escape::path(destination)
                ),
            ));
        }
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent)?;
        loop {
            let temp = tempfile::Builder::new()
                .prefix(own_prefix())
                .suffix(PARTIAL_SUFFIX)
                .tempfile_in(parent)?;
            // Some file systems (some FUSE and network ones) have no locks; there the
            // output is written all the same, and cleaners judge its age instead.
            let _ = temp.as_file().lock();
            // A cleaner may have found the file between its creation and the lock,
            // taken it for stale and removed it: then this one is no longer in the
            // directory, and a new one is needed.
            if still_linked(temp.as_file())? {
                return Ok(Self {
                    temp,
                    destination: destination.to_path_buf(),
                });
            }
        }
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Gives the output the permission bits `mode` and moves it to its final name
    /// atomically.
    pub fn commit(self, mode: u32) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.temp
                .as_file()
                .set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        self.temp
            .persist(&self.destination)
            .map(drop)
            .map_err(|e| e.error)
    }
}

#[cfg(unix)]
fn still_linked(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink() > 0)
}

#[cfg(not(unix))]
fn still_linked(_: &File) -> io::Result<bool> {
    Ok(true)
}

/// What [`remove_stale_partials`] found.
#[derive(Debug, Default)]
pub struct PartialCleanup {
    /// Stale partial outputs removed (or, in a dry run, that would be).
    pub removed: u64,
    /// Partial outputs a live process is writing (locked), left alone.
    pub in_use: u64,
    /// Stale partial outputs that could not be removed, and why.
    pub not_removed: Vec<(PathBuf, io::Error)>,
}

/// Removes the temporary outputs that killed runs left anywhere below `root` (a
/// directory, or a single output's directory when `recursive` is false): plaintext
/// prefixes of decrypted files, among others. A partial file whose lock can be taken
/// has no live writer; one that is locked belongs to a running job and is left alone
/// (where the file system has no locks, one untouched for an hour is taken for stale).
/// With `dry_run`, counts without removing.
pub fn remove_stale_partials(root: &Path, recursive: bool, dry_run: bool) -> PartialCleanup {
    let mut found = PartialCleanup::default();
    if !root.is_dir() {
        return found;
    }
    let depth = if recursive { usize::MAX } else { 1 };
    let walk = walkdir::WalkDir::new(root).max_depth(depth).into_iter();
    for entry in walk.filter_map(Result::ok) {
        let name = entry.file_name();
        if !entry.file_type().is_file()
            || !is_partial_name(name)
            || name.as_encoded_bytes().starts_with(own_prefix().as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let file = match File::open(path) {
            Ok(f) => f,
            // Committed or removed by its writer meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                found.not_removed.push((path.to_path_buf(), e));
                continue;
            }
        };
        let stale = match file.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            // No locks on this file system: judge by age.
            Err(fs::TryLockError::Error(_)) => file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_WITHOUT_LOCKS),
        };
        if !stale {
            found.in_use += 1;
        } else if dry_run {
            found.removed += 1;
        } else {
            // Removed while locked, so no writer can be starting on it meanwhile.
            match fs::remove_file(path) {
                Ok(()) => found.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => found.not_removed.push((path.to_path_buf(), e)),
            }
        }
    }
    found
}

/// Bytes per write of a local output.
const WRITE_BUFFER: usize = 1 << 20;

/// A local destination file, committed atomically. Each buffer is written on a blocking
/// thread while the next one fills.
pub struct LocalSink {
    staged: StagedFile,
    /// The file, while no write holds it.
    file: Option<File>,
    /// The write in flight: it returns the file and the buffer.
    writing: Option<tokio::task::JoinHandle<(File, BytesMut, io::Result<()>)>>,
    spare: Option<BytesMut>,
    written: u64,
    mode: u32,
}

impl LocalSink {
    /// Starts the output for `destination`; on commit it gets
    /// [`output_mode`]`(source_mode)`.
    pub async fn create(
        destination: &Path,
        source_mode: Option<u32>,
    ) -> Result<Self, crate::Error> {
        let destination = destination.to_path_buf();
        bridge::blocking("creating a file", move || {
            let mut staged = StagedFile::create(&destination)?;
            let file = staged.file().try_clone()?;
            Ok(Self {
                staged,
                file: Some(file),
                writing: None,
                spare: None,
                written: 0,
                mode: output_mode(source_mode),
            })
        })
        .await?
    }

    /// Waits for the write in flight, if any.
    async fn settle(&mut self) -> Result<(), crate::Error> {
        let Some(writing) = self.writing.take() else {
            return Ok(());
        };
        let (file, mut buf, result) = writing
            .await
            .map_err(|e| crate::Error::Internal(format!("a file write panicked: {e}")))?;
        self.file = Some(file);
        buf.clear();
        self.spare = Some(buf);
        Ok(result?)
    }
}

impl Sink for LocalSink {
    fn lend(&mut self) -> BoxFuture<'_, Result<BytesMut, crate::Error>> {
        let buf = self
            .spare
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(WRITE_BUFFER));
        Box::pin(async move { Ok(buf) })
    }

    fn put(&mut self, filled: BytesMut) -> BoxFuture<'_, Result<(), crate::Error>> {
        Box::pin(async move {
            self.settle().await?;
            self.written += filled.len() as u64;
            let mut file = self
                .file
                .take()
                .ok_or_else(|| crate::Error::Internal("a local output lost its file".into()))?;
            self.writing = Some(tokio::task::spawn_blocking(move || {
                let result = file.write_all(&filled);
                (file, filled, result)
            }));
            Ok(())
        })
    }

    fn copy_range<'a>(
        &'a mut self,
        from: &'a ObjectId,
        etag: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<(), crate::Error>> {
        Box::pin(async move {
            let ObjectId::Local(path) = from else {
                return Err(crate::Error::Unsupported(
                    "a local output copies ranges only from local files".into(),
                ));
            };
            self.settle().await?;
            let mut file = self
                .file
                .take()
                .ok_or_else(|| crate::Error::Internal("a local output lost its file".into()))?;
            let (path, etag) = (path.clone(), etag.to_string());
            let (file, copied) = bridge::blocking("copying a file range", move || {
                let copied = copy_file_range(&path, &etag, range, &mut file);
                (file, copied)
            })
            .await?;
            self.file = Some(file);
            self.written += copied?;
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, crate::Error>> {
        Box::pin(async move {
            self.settle().await?;
            let (staged, mode, written) = (self.staged, self.mode, self.written);
            drop(self.file);
            bridge::blocking("committing a file", move || staged.commit(mode)).await??;
            Ok(written)
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.settle().await;
            // Dropping the staged file removes it.
            let staged = self.staged;
            let _ = bridge::blocking("removing a partial file", move || drop(staged)).await;
        })
    }
}

/// Copies `range` of the file at `path` (still with fingerprint `etag`) to the end of
/// `out`. `io::copy` between files lets the kernel copy (`copy_file_range` on Linux),
/// so the bytes need not pass through this process.
fn copy_file_range(
    path: &Path,
    etag: &str,
    range: std::ops::Range<u64>,
    out: &mut File,
) -> Result<u64, crate::Error> {
    use std::io::Seek;
    let mut source = File::open(path)?;
    let meta = source.metadata()?;
    if fingerprint(&meta) != etag {
        return Err(crate::Error::SourceChanged(SourceChanged {
            what: "it is not the file the range was taken from".into(),
        }));
    }
    let len = range.end.saturating_sub(range.start);
    if range.end > meta.len() {
        return Err(crate::Error::Unsupported(format!(
            "the range ends at byte {} of a {}-byte file",
            range.end,
            meta.len()
        )));
    }
    source.seek(io::SeekFrom::Start(range.start))?;
    let copied = io::copy(&mut source.take(len), out)?;
    if copied != len {
        return Err(crate::Error::SourceChanged(SourceChanged {
            what: format!("{copied} of {len} bytes of the range could be read"),
        }));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        for yes in [".sealpipe-abc123.partial", ".sealpipe-x.partial"] {
            assert!(is_partial_name(OsStr::new(yes)), "{yes}");
        }
        for no in [
            ".sealpipe-.partial",
            "sealpipe-a.partial",
            ".sealpipe-a",
            "a.partial",
        ] {
            assert!(!is_partial_name(OsStr::new(no)), "{no}");
        }
    }

    #[test]
    fn stale_partials_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        fs::create_dir_all(&nested).unwrap();
        // Left by a killed run: no lock.
        fs::write(nested.join(".sealpipe-dead01.partial"), b"plaintext prefix").unwrap();
        fs::write(dir.path().join(".sealpipe-dead02.partial"), b"x").unwrap();
        fs::write(dir.path().join("kept.txt"), b"not ours").unwrap();
        // Another process's live one, locked.
        let other = dir.path().join(".sealpipe-0ther-live.partial");
        fs::write(&other, b"y").unwrap();
        let other_writer = File::open(&other).unwrap();
        other_writer.lock().unwrap();
        // This process's own: live, so passed over and not even counted.
        let live = StagedFile::create(&dir.path().join("out.bin")).unwrap();

        let dry = remove_stale_partials(dir.path(), true, true);
        assert_eq!((dry.removed, dry.in_use), (2, 1));
        assert!(nested.join(".sealpipe-dead01.partial").exists());

        let top_only = remove_stale_partials(dir.path(), false, false);
        assert_eq!((top_only.removed, top_only.in_use), (1, 1));
        let all = remove_stale_partials(dir.path(), true, false);
        assert_eq!((all.removed, all.in_use), (1, 1));
        assert!(all.not_removed.is_empty());
        assert!(!nested.join(".sealpipe-dead01.partial").exists());
        assert!(dir.path().join("kept.txt").exists());

        live.commit(0o600).unwrap();
        assert!(dir.path().join("out.bin").exists());
        drop(other_writer);
        let after = remove_stale_partials(dir.path(), true, false);
        assert_eq!((after.removed, after.in_use), (1, 0));
        assert!(remove_stale_partials(dir.path(), true, false).removed == 0);
    }

    #[cfg(unix)]
    #[test]
    fn outputs_keep_only_permission_bits_under_the_umask() {
        let mask = umask();
        assert_eq!(output_mode(Some(0o104755)), 0o755 & !mask);
        assert_eq!(output_mode(Some(0o102750)), 0o750 & !mask);
        assert_eq!(output_mode(Some(0o041777)), 0o777 & !mask);
        assert_eq!(output_mode(None), 0o666 & !mask);
        assert_eq!(output_mode(Some(0o100600)), 0o600 & !mask);
        assert_eq!(umask_from_probe(), Some(mask));
    }

    async fn read_all(source: SourceObject) -> Result<Vec<u8>, crate::Error> {
        let mut body = source.body;
        let mut all = Vec::new();
        while let Some(chunk) = body.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn a_source_that_changes_while_read_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let changed = |e: crate::Error| matches!(e, crate::Error::SourceChanged(_));

        fs::write(&path, vec![7u8; 2 * READ_CHUNK]).unwrap();
        let mut shrinking = open_local(&path).await.unwrap();
        let first = shrinking.body.next_chunk().await.unwrap().unwrap();
        assert_eq!(first.len(), READ_CHUNK);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let err = read_all(shrinking).await.unwrap_err();
        assert!(err.to_string().contains("when reading ended"), "{err}");
        assert!(changed(err));

        fs::write(&path, vec![7u8; 1000]).unwrap();
        let growing = open_local(&path).await.unwrap();
        File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1u8; 300_000])
            .unwrap();
        let err = read_all(growing).await.unwrap_err();
        assert!(err.to_string().contains("grew past"), "{err}");
        assert!(changed(err));

        // Exactly a chunk, then exactly two: the end is found without a short read.
        for len in [0, 6, READ_CHUNK, 2 * READ_CHUNK, 2 * READ_CHUNK + 1] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            fs::write(&path, &data).unwrap();
            let steady = open_local(&path).await.unwrap();
            assert_eq!(steady.info.size, len as u64);
            assert_eq!(read_all(steady).await.unwrap(), data, "{len} bytes");
        }
    }
}
