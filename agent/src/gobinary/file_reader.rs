//! Reading an executable with ordinary reads (`pread` for ranges), never a mapping.
//!
//! Why not mmap: a shared mapping of a file that another process truncates (a deploy
//! rewriting a binary in place) raises SIGBUS on the first touch past the new end, and that
//! kills the agent. A read of bytes that are gone is an ordinary error instead.
//!
//! `FileReader` also implements `object::ReadCacheOps`, so the ELF headers can be parsed with
//! `object` by reading only the ranges the parser asks for (see `classify`), and it counts
//! the bytes it reads, so tests can check that deciding "not Go" stays cheap.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use object::read::ReadCacheOps;

/// A Go binary larger than this is refused: the whole file is copied into memory, and a
/// production binary is 10-200 MB.
pub(crate) const MAX_GO_BINARY_BYTES: u64 = 1 << 30;

/// An open file, its size when opened, and what was read from it.
pub(crate) struct FileReader {
    file: File,
    /// The size at open. Reads are bounded by it; a file that shrinks later gives
    /// short reads, which are errors.
    len: u64,
    /// The cursor `object::ReadCache` seeks and reads with (pread does not move the file's).
    position: Cell<u64>,
    bytes_read: Cell<u64>,
    /// The first read error. `object` reports failures as `()`, so without this a short read
    /// (the file shrank) would look like a malformed ELF, which discovery caches as "not Go".
    error: RefCell<Option<io::Error>>,
}

impl FileReader {
    pub fn open(path: &Path) -> io::Result<FileReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileReader {
            file,
            len,
            position: Cell::new(0),
            bytes_read: Cell::new(0),
            error: RefCell::new(None),
        })
    }

    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    #[cfg(test)]
    /// Bytes asked of the file so far (every read, whole or short).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    /// The first read error since open, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        self.error.borrow_mut().take()
    }

    /// Exactly `len` bytes at `offset`, which must lie within the size at open: then a short
    /// read means the file shrank, an `UnexpectedEof` error.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len} bytes at offset {offset} are past the end ({} bytes)", self.len),
            ));
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| out_of_memory(len as u64))?;
        bytes.resize(len, 0);
        self.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    /// The whole file, checked to be the size it had at open before and after the read
    /// (a file being rewritten in place gives an error, not a mix of two versions' sizes).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        if self.len > MAX_GO_BINARY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "{} bytes: golens copies a Go binary into memory and refuses more than {}",
                    self.len, MAX_GO_BINARY_BYTES
                ),
            ));
        }
        let len = usize::try_from(self.len).map_err(|_| out_of_memory(self.len))?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).map_err(|_| out_of_memory(self.len))?;
        // `read_to_end` fills the reserved memory directly; a `pread` into a zeroed buffer
        // would write every byte twice (a third of the time for a 90 MB binary, measured).
        let mut file = &self.file;
        Seek::seek(&mut file, SeekFrom::Start(0))?;
        file.take(self.len).read_to_end(&mut bytes)?;
        self.count(len);
        if bytes.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being read: {} bytes of the {} it had when opened",
                    bytes.len(),
                    self.len
                ),
            ));
        }
        let len_now = self.file.metadata()?.len();
        if len_now != self.len {
            return Err(changed_size(self.len, len_now));
        }
        Ok(bytes)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.count(buf.len());
        self.file.read_exact_at(buf, offset).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being read: {} bytes at offset {offset} are past its \
                     end (it had {} bytes when opened)",
                    buf.len(),
                    self.len
                ),
            ),
            _ => error,
        })
    }

    fn count(&self, len: usize) {
        self.bytes_read.set(self.bytes_read.get().saturating_add(len as u64));
    }

    /// Keeps the first error for `take_error`, and gives `object` its `()`.
    fn record(&self, error: io::Error) {
        self.error.borrow_mut().get_or_insert(error);
    }
}

fn out_of_memory(len: u64) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate {len} bytes to read"))
}

fn changed_size(at_open: u64, now: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file changed size while being read ({at_open} bytes when opened, {now} now)"),
    )
}

/// What `object::ReadCache` needs: a cursor over the file, never past its size at open.
impl ReadCacheOps for &FileReader {
    fn len(&mut self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn seek(&mut self, pos: u64) -> Result<u64, ()> {
        self.position.set(pos);
        Ok(pos)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let position = self.position.get();
        let available = self.len.saturating_sub(position);
        let want = buf.len().min(usize::try_from(available).unwrap_or(usize::MAX));
        self.count(want);
        match self.file.read_at(&mut buf[..want], position) {
            // Zero bytes before the size at open means the file shrank.
            Ok(0) if want > 0 => {
                self.record(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shrank while being read: nothing at offset {position}"),
                ));
                Err(())
            }
            Ok(read) => {
                self.position.set(position + read as u64);
                Ok(read)
            }
            Err(error) => {
                self.record(error);
                Err(())
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ()> {
        let position = self.position.get();
        match self.read_exact_at(buf, position) {
            Ok(()) => {
                self.position.set(position + buf.len() as u64);
                Ok(())
            }
            Err(error) => {
                self.record(error);
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("golens-{name}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn reads_ranges_and_counts_bytes() {
        let contents: Vec<u8> = (0..=255).collect();
        let path = scratch_file("reader-ranges", &contents);
        let reader = FileReader::open(&path).unwrap();
        assert_eq!(reader.len(), 256);
        assert_eq!(reader.read_at(10, 4).unwrap(), vec![10, 11, 12, 13]);
        assert_eq!(reader.bytes_read(), 4);
        assert_eq!(reader.read_all().unwrap(), contents);
        assert_eq!(reader.bytes_read(), 4 + 256);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let path = scratch_file("reader-past-end", &[7u8; 100]);
        let reader = FileReader::open(&path).unwrap();
        let error = reader.read_at(90, 20).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("offset 90"), "{error}");
        assert!(reader.read_at(u64::MAX, 2).is_err());
        assert_eq!(reader.bytes_read(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_after_open_gives_errors_not_short_data() {
        let path = scratch_file("reader-shrinks", &[7u8; 4096]);
        let reader = FileReader::open(&path).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1000).unwrap();
        assert_eq!(reader.read_all().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let error = reader.read_at(2000, 16).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("shrank"), "{error}");
        // Through object's cursor: `()` for object, the cause kept for the caller.
        let mut ops = &reader;
        assert_eq!(ops.seek(2000), Ok(2000));
        assert_eq!(ops.read_exact(&mut [0u8; 16]), Err(()));
        assert_eq!(ops.read(&mut [0u8; 16]), Err(()));
        assert_eq!(reader.take_error().unwrap().kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_grows_while_read_is_an_error() {
        let path = scratch_file("reader-grows", &[7u8; 100]);
        let reader = FileReader::open(&path).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().set_len(200).unwrap();
        let error = reader.read_all().unwrap_err();
        assert!(error.to_string().contains("changed size"), "{error}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn cursor_reads_stop_at_the_size_at_open() {
        let path = scratch_file("reader-cursor", b"0123456789");
        let reader = FileReader::open(&path).unwrap();
        let mut ops = &reader;
        let mut buf = [0u8; 8];
        assert_eq!(ops.seek(6), Ok(6));
        assert_eq!(ops.read(&mut buf), Ok(4));
        assert_eq!(&buf[..4], b"6789");
        assert_eq!(ops.read(&mut buf), Ok(0));
        assert_eq!(ops.seek(2), Ok(2));
        assert_eq!(ops.read_exact(&mut buf[..3]), Ok(()));
        assert_eq!(&buf[..3], b"234");
        assert!(reader.take_error().is_none());
        std::fs::remove_file(&path).unwrap();
    }
}
