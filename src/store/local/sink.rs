//! A local output as a [`Sink`]: buffers written on a blocking thread while the next
//! fills, the staged file committed atomically, ranges copied by the kernel.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

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
pub struct LocalSink {
    staged: StagedFile,
    /// The file, while no write holds it.
    file: Option<File>,
    /// The write in flight: it returns the file and the buffer.
    writing: Option<tokio::task::JoinHandle<(File, BytesMut, io::Result<()>)>>,
    spare: Option<BytesMut>,
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
            copied?;
            Ok(())
        })
    }

    fn blocking_writer(&mut self) -> Option<&mut (dyn Write + Send)> {
        if self.writing.is_some() {
            return None;
        }
        self.file.as_mut().map(|f| f as &mut (dyn Write + Send))
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, crate::Error>> {
        Box::pin(async move {
            self.settle().await?;
            let (mut staged, mode) = (self.staged, self.mode);
            drop(self.file);
            // The file's length counts every way bytes went in: buffers put, ranges
            // copied, writes on the codec's thread.
            bridge::blocking("committing a file", move || {
                let size = staged.file().metadata()?.len();
                staged.commit(mode)?;
                Ok::<_, io::Error>(size)
            })
            .await?
            .map_err(crate::Error::from)
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
