//! A local output as a [`Sink`]: buffers written on a blocking thread while the next
//! fills, the staged file committed atomically, ranges copied by the kernel.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::fingerprint;
use super::mode::output_mode;
use super::reader::SourceChanged;
use super::staged::StagedFile;
use crate::bridge;
use crate::store::{BoxFuture, ObjectId, Sink};

/// Bytes per write of a local output.
const WRITE_BUFFER: usize = 1 << 20;

/// A local destination file, committed atomically. Each buffer is written on a blocking
/// thread while the next one fills.
///
/// Nothing touches the file system before there is something to write that cannot
/// wait: the staged file is created with the second buffer, a range copy, the first
/// write on the codec's thread, or the commit. A small output (one buffer) therefore
/// costs a single hand-off to a blocking thread, its commit: create, write, set the
/// mode and rename, together.
pub struct LocalSink {
    /// The output, while no write holds it.
    out: Option<Output>,
    /// The write in flight: it returns the output and the buffer.
    writing: Option<tokio::task::JoinHandle<(Output, BytesMut, io::Result<()>)>>,
    spare: Option<BytesMut>,
    /// Capacity of lent buffers: the expected size, up to [`WRITE_BUFFER`].
    buffer: usize,
}

/// The output itself: its staged file once created, and the first buffer until then.
/// Its [`Write`] blocks (it creates and writes files): only the codec's thread and
/// blocking tasks use it.
struct Output {
    destination: PathBuf,
    /// A local source the commit must not replace (see [`LocalSink::sparing`]).
    source: Option<PathBuf>,
    mode: u32,
    staged: Option<StagedFile>,
    /// The first buffer put, held until the staged file exists.
    held: Option<BytesMut>,
    /// Bytes in the staged file.
    written: u64,
}

impl Output {
    /// The staged file, created (with what was held) if it was not yet.
    fn file(&mut self) -> io::Result<&mut File> {
        let staged = match &mut self.staged {
            Some(staged) => staged,
            none => none.insert(StagedFile::create(&self.destination, self.mode)?),
        };
        if let Some(held) = self.held.take() {
            staged.file().write_all(&held)?;
            self.written += held.len() as u64;
        }
        Ok(staged.file())
    }

    /// Writes everything held and commits: returns the output's size.
    fn commit(mut self) -> io::Result<u64> {
        self.file()?;
        let written = self.written;
        match self.staged {
            Some(staged) => staged.commit_sparing(self.source.as_deref())?,
            None => return Err(io::Error::other("a local output lost its file")),
        }
        Ok(written)
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LocalSink {
    /// Starts the output for `destination`; on commit it gets
    /// [`output_mode`]`(source_mode)`.
    pub async fn create(
        destination: &Path,
        source_mode: Option<u32>,
    ) -> Result<Self, crate::Error> {
        Ok(Self::new(destination, source_mode, 0))
    }

    /// Starts the output for `destination`, of about `size_hint` bytes (0: unknown),
    /// touching nothing yet; on commit it gets [`output_mode`]`(source_mode)`.
    pub fn new(destination: &Path, source_mode: Option<u32>, size_hint: u64) -> Self {
        let buffer = match usize::try_from(size_hint) {
            Ok(0) | Err(_) => WRITE_BUFFER,
            Ok(n) => n.min(WRITE_BUFFER),
        };
        Self {
            out: Some(Output {
                destination: destination.to_path_buf(),
                source: None,
                mode: output_mode(source_mode),
                staged: None,
                held: None,
                written: 0,
            }),
            writing: None,
            spare: None,
            buffer,
        }
    }

    /// Makes the commit refuse to replace the file `source` is, under any name (a hard
    /// link, a bind mount, another spelling of its path): see
    /// [`StagedFile::commit_sparing`].
    pub fn sparing(mut self, source: &Path) -> Self {
        if let Some(out) = &mut self.out {
            out.source = Some(source.to_path_buf());
        }
        self
    }

    /// Waits for the write in flight, if any.
    async fn settle(&mut self) -> Result<(), crate::Error> {
        let Some(writing) = self.writing.take() else {
            return Ok(());
        };
        let (out, mut buf, result) = writing
            .await
            .map_err(|e| crate::Error::Internal(format!("a file write panicked: {e}")))?;
        self.out = Some(out);
        buf.clear();
        self.spare = Some(buf);
        Ok(result?)
    }

    /// The output, once no write holds it.
    async fn output(&mut self) -> Result<Output, crate::Error> {
        self.settle().await?;
        self.out
            .take()
            .ok_or_else(|| crate::Error::Internal("a local output lost its file".into()))
    }
}

impl Sink for LocalSink {
    fn lend(&mut self) -> BoxFuture<'_, Result<BytesMut, crate::Error>> {
        let buf = self
            .spare
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(self.buffer));
        Box::pin(async move { Ok(buf) })
    }

    fn put(&mut self, filled: BytesMut) -> BoxFuture<'_, Result<(), crate::Error>> {
        Box::pin(async move {
            let mut out = self.output().await?;
            if out.staged.is_none() && out.held.is_none() {
                // Perhaps the whole output: written with the commit.
                out.held = Some(filled);
                self.out = Some(out);
                return Ok(());
            }
            self.writing = Some(tokio::task::spawn_blocking(move || {
                let result = out.write_all(&filled);
                (out, filled, result)
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
            let mut out = self.output().await?;
            let (path, etag) = (path.clone(), etag.to_string());
            let (out, copied) = bridge::blocking("copying a file range", move || {
                let copied = out
                    .file()
                    .map_err(crate::Error::from)
                    .and_then(|file| copy_file_range(&path, &etag, range, file));
                if let Ok(n) = copied {
                    out.written += n;
                }
                (out, copied)
            })
            .await?;
            self.out = Some(out);
            copied?;
            Ok(())
        })
    }

    fn blocking_writer(&mut self) -> Option<&mut (dyn Write + Send)> {
        if self.writing.is_some() {
            return None;
        }
        self.out.as_mut().map(|f| f as &mut (dyn Write + Send))
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, crate::Error>> {
        Box::pin(async move {
            let out = self.output().await?;
            // Everything goes in at once: the staged file (if nothing was written yet),
            // the held buffer, the mode, the rename.
            bridge::blocking("committing a file", move || out.commit())
                .await?
                .map_err(crate::Error::from)
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.settle().await;
            // Dropping the staged file removes it; an output that never created one
            // has nothing to remove.
            if let Some(staged) = self.out.take().and_then(|out| out.staged) {
                let _ = bridge::blocking("removing a partial file", move || drop(staged)).await;
            }
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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn buffer(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[tokio::test]
    async fn outputs_appear_whole_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/out");

        // One buffer: nothing on disk until the commit, which makes the whole file.
        let mut sink = Box::new(LocalSink::new(&out, Some(0o100640), 5));
        sink.put(buffer(b"hello")).await.unwrap();
        assert!(names(dir.path()).is_empty(), "nothing before the commit");
        assert_eq!(sink.commit().await.unwrap(), 5);
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, output_mode(Some(0o640)));
        }

        // Nothing put: an empty file.
        let empty = dir.path().join("sub/empty");
        let sink = Box::new(LocalSink::new(&empty, None, 0));
        assert_eq!(sink.commit().await.unwrap(), 0);
        assert_eq!(std::fs::read(&empty).unwrap(), b"");

        // Several buffers, written while the next fills: all of them, in order.
        let mut sink = Box::new(LocalSink::new(&out, None, 0));
        for part in [&b"one,"[..], b"two,", b"three"] {
            sink.put(buffer(part)).await.unwrap();
        }
        assert_eq!(sink.commit().await.unwrap(), 13);
        assert_eq!(std::fs::read(&out).unwrap(), b"one,two,three");

        // Aborted after one buffer (never created) or after several (staged): nothing.
        for parts in [1, 3] {
            let gone = dir.path().join("sub/gone");
            let mut sink = Box::new(LocalSink::new(&gone, None, 0));
            for _ in 0..parts {
                sink.put(buffer(b"data")).await.unwrap();
            }
            sink.abort().await;
            assert_eq!(names(&dir.path().join("sub")), ["empty", "out"], "{parts}");
        }

        // A destination that is a directory fails at the commit, leaving nothing.
        let taken = dir.path().join("sub/taken");
        std::fs::create_dir(&taken).unwrap();
        let mut sink = Box::new(LocalSink::new(&taken, None, 0));
        sink.put(buffer(b"data")).await.unwrap();
        assert!(sink.commit().await.is_err());
        assert_eq!(names(&dir.path().join("sub")), ["empty", "out", "taken"]);
        assert!(names(&taken).is_empty());
    }

    /// A sink sparing its source refuses to replace it under any name (here a hard
    /// link and the path itself), leaving it as it was, and commits anywhere else.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_sink_never_replaces_the_source_it_spares() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"original").unwrap();
        let linked = dir.path().join("linked");
        std::fs::hard_link(&source, &linked).unwrap();
        for destination in [&linked, &source] {
            let mut sink = Box::new(LocalSink::new(destination, None, 0).sparing(&source));
            sink.put(buffer(b"sealed")).await.unwrap();
            let refused = sink.commit().await.unwrap_err();
            assert!(
                matches!(refused, crate::Error::WouldReplaceSource(_)),
                "{refused:?}"
            );
        }
        assert_eq!(std::fs::read(&source).unwrap(), b"original");
        assert_eq!(names(dir.path()), ["linked", "source"]);

        // An existing, unrelated file is replaced; a new name is simply created.
        let other = dir.path().join("other");
        std::fs::write(&other, b"old").unwrap();
        for destination in [&other, &dir.path().join("new")] {
            let mut sink = Box::new(LocalSink::new(destination, None, 0).sparing(&source));
            sink.put(buffer(b"sealed")).await.unwrap();
            assert_eq!(sink.commit().await.unwrap(), 6);
            assert_eq!(std::fs::read(destination).unwrap(), b"sealed");
        }
        assert_eq!(names(dir.path()), ["linked", "new", "other", "source"]);
    }

    #[tokio::test]
    async fn writes_on_the_codec_thread_go_in_after_what_was_put() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut sink = Box::new(LocalSink::new(&out, None, 0));
        sink.put(buffer(b"head:")).await.unwrap();
        let writer = sink.blocking_writer().unwrap();
        // As the codec's thread does (blocking this test's runtime is harmless).
        writer.write_all(b"body").unwrap();
        assert_eq!(sink.commit().await.unwrap(), 9);
        assert_eq!(std::fs::read(&out).unwrap(), b"head:body");
    }
}
