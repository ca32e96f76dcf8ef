//! Reading a local file as a body of chunks, exactly as it was when opened.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use super::fingerprint;
use super::mode::unix_mode;
use crate::bridge::{self, BlockingRead};
use crate::store::{Body, BoxFuture, ObjectMeta, SourceInfo, SourceObject};

/// Bytes read from a file per chunk: large enough that each read is one system call
/// worth making, small enough that the chunks a body holds ahead stay small.
const READ_CHUNK: usize = 512 * 1024;

/// Files up to this size are read whole when opened, on the same blocking thread: their
/// body is then in memory ([`Body::take_if_in_memory`]), so a small file costs one
/// hand-off to a blocking thread for opening and reading instead of one for each, and
/// is sealed or opened without streaming it through the bridge. Smaller than a chunk,
/// so a file read whole is read exactly as a body's first chunk would have been.
const READ_WHOLE: u64 = 256 * 1024;

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
        let mut file = UnchangedFile {
            file,
            size: meta.len(),
            modified: meta.modified().ok(),
            read: 0,
        };
        // Read to its end, with the checks there: the file as it was when opened.
        let body = if meta.len() <= READ_WHOLE {
            LocalBody {
                file: None,
                whole: Some(file.read_whole()?),
            }
        } else {
            LocalBody {
                file: Some(file),
                whole: None,
            }
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
                server_side: None,
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
    pub(super) what: String,
}

/// A source that changed while it was read, and how.
fn changed(what: String) -> crate::Error {
    crate::Error::SourceChanged(SourceChanged { what })
}

/// A file read to exactly the end it had when opened.
struct UnchangedFile {
    file: File,
    size: u64,
    modified: Option<SystemTime>,
    read: u64,
}

impl UnchangedFile {
    /// Reads into `buf`; fails with [`SourceChanged`] when the file turns out longer or
    /// shorter than when it was opened, or modified (checked where it ends).
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, crate::Error> {
        self.read_into_vectored(&mut [io::IoSliceMut::new(buf)])
    }

    /// [`read_into`](Self::read_into) over several buffers, in one system call.
    fn read_into_vectored(
        &mut self,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Result<usize, crate::Error> {
        let room: usize = bufs.iter().map(|b| b.len()).sum();
        let n = loop {
            match self.file.read_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.read += n as u64;
        self.check_not_grown()?;
        if n == 0 && room > 0 {
            self.check_complete()?;
        }
        Ok(n)
    }

    /// Fails if more was read than the file had when opened.
    fn check_not_grown(&self) -> Result<(), crate::Error> {
        if self.read > self.size {
            return Err(changed(format!(
                "it had {} bytes when opened and grew past that",
                self.size
            )));
        }
        Ok(())
    }

    /// At the end of the file: fails unless exactly what it had when opened was read,
    /// and it was not rewritten in place meanwhile (same length, new contents).
    fn check_complete(&self) -> Result<(), crate::Error> {
        if self.read != self.size {
            return Err(changed(format!(
                "it had {} bytes when opened, {} when reading ended",
                self.size, self.read
            )));
        }
        let now = self.file.metadata()?;
        if now.len() != self.size || now.modified().ok() != self.modified {
            return Err(changed("it was modified while it was read".into()));
        }
        Ok(())
    }

    /// The whole (small) file, with the same checks as [`read_into`](Self::read_into).
    /// Read in one call of its size and a byte more (growth then shows without
    /// another), and a last one that finds the end; `read_to_end` would start small
    /// and double, several calls for a 64 KiB file. The buffer is not zeroed first:
    /// the kernel fills it, and for many small files zeroing was a measurable share
    /// of the CPU the file cost.
    fn read_whole(&mut self) -> Result<bytes::Bytes, crate::Error> {
        let size = usize::try_from(self.size)
            .map_err(|_| crate::Error::Internal("a small file's size overflows".into()))?;
        let mut buf = Vec::with_capacity(size + 1);
        while buf.len() < buf.capacity() {
            let before = buf.len();
            match rustix::io::read(&self.file, rustix::buffer::spare_capacity(&mut buf)) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
                Ok(_) => {}
            }
            let n = buf.len() - before;
            self.read += n as u64;
            self.check_not_grown()?;
            if n == 0 {
                self.check_complete()?;
                break;
            }
        }
        Ok(buf.into())
    }

    /// Reads into `buf` until it is full or the file ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, crate::Error> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_into(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }

    /// The next chunk, empty at the end.
    fn read_chunk(&mut self) -> Result<bytes::Bytes, crate::Error> {
        // One byte more than is left, so growth shows without another call.
        let left = self.size.saturating_sub(self.read);
        let want =
            usize::try_from(left.saturating_add(1)).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
        let mut buf = bytes::BytesMut::zeroed(want);
        let filled = self.fill(&mut buf)?;
        buf.truncate(filled);
        Ok(buf.freeze())
    }
}

/// A local file read directly on the codec's thread.
struct FileReader {
    file: UnchangedFile,
    failure: Option<crate::Error>,
}

impl FileReader {
    fn fail(&mut self, e: crate::Error) -> io::Error {
        let message = e.to_string();
        self.failure = Some(e);
        io::Error::other(message)
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_into(buf).map_err(|e| self.fail(e))
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        self.file.read_into_vectored(bufs).map_err(|e| self.fail(e))
    }
}

impl BlockingRead for FileReader {
    fn take_failure(&mut self) -> Option<crate::Error> {
        self.failure.take()
    }
}

/// A small file read whole when opened, as a reader for the codec's thread.
struct MemoryReader(io::Cursor<bytes::Bytes>);

impl Read for MemoryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        self.0.read_vectored(bufs)
    }
}

impl BlockingRead for MemoryReader {
    fn take_failure(&mut self) -> Option<crate::Error> {
        None
    }
}

/// A local file's body: chunks read on a blocking thread, one at a time, or a small
/// file read whole when it was opened.
struct LocalBody {
    /// `None` once the end was reached (or the file failed), and for files read whole.
    file: Option<UnchangedFile>,
    /// A file read whole when opened, until it is taken.
    whole: Option<bytes::Bytes>,
}

impl Body for LocalBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<bytes::Bytes>, crate::Error>> {
        Box::pin(async move {
            if let Some(whole) = self.whole.take() {
                return Ok((!whole.is_empty()).then_some(whole));
            }
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

    /// A file read whole when opened is in memory until its bytes are taken, as
    /// chunks or here; one read in chunks never is.
    fn take_if_in_memory(&mut self, limit: usize) -> Option<bytes::Bytes> {
        if self.file.is_some() {
            return None;
        }
        match self.whole.take() {
            Some(whole) if whole.len() > limit => {
                self.whole = Some(whole);
                None
            }
            whole => Some(whole.unwrap_or_default()),
        }
    }

    fn into_blocking(self: Box<Self>) -> Result<Box<dyn BlockingRead>, Box<dyn Body>> {
        match (self.file, self.whole) {
            (Some(file), _) => Ok(Box::new(FileReader {
                file,
                failure: None,
            })),
            (None, whole) => Ok(Box::new(MemoryReader(io::Cursor::new(
                whole.unwrap_or_default(),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

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

        // Larger than what is read whole when opened, so growth shows while reading.
        fs::write(&path, vec![7u8; READ_WHOLE as usize + 1000]).unwrap();
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

    #[tokio::test]
    async fn small_files_are_read_whole_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for len in [0, 100, READ_WHOLE as usize] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            fs::write(&path, &data).unwrap();
            let mut opened = open_local(&path).await.unwrap();
            // What happens to the file after it was opened no longer matters.
            fs::write(&path, b"changed").unwrap();
            let whole = opened.body.take_if_in_memory(usize::MAX).unwrap();
            assert_eq!(&whole[..], &data[..], "{len} bytes");
            assert_eq!(opened.body.take_if_in_memory(usize::MAX).unwrap().len(), 0);
            let again = open_local(&path).await.unwrap();
            assert_eq!(read_all(again).await.unwrap(), b"changed");
        }
        // Larger files stream, and are never taken for in memory.
        fs::write(&path, vec![1u8; READ_WHOLE as usize + 1]).unwrap();
        let mut large = open_local(&path).await.unwrap();
        assert!(large.body.take_if_in_memory(usize::MAX).is_none());
        assert_eq!(
            read_all(large).await.unwrap().len(),
            READ_WHOLE as usize + 1
        );
    }
}
