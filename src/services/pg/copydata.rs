//! One table's COPY data read straight out of a custom-format archive, so a restore can
//! load a table that holds most of a dump through several sessions at once (pg_restore
//! gives each table's data to one job). The block's framing is the one
//! [`super::dump::walk`] checked: a type byte, the entry id, then length-prefixed chunks
//! up to a zero length; with gzip compression the chunks together are one zlib stream.

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::dump::{TableData, Walk};

/// The chunks of one data block, concatenated; `consumed` counts the bytes read of the
/// block as stored (for progress).
struct Chunks<R> {
    inner: R,
    int_size: u8,
    left: u64,
    done: bool,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Chunks<R> {
    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> io::Result<i64> {
        let mut bytes = vec![0u8; 1 + usize::from(self.int_size)];
        self.inner.read_exact(&mut bytes)?;
        self.consumed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut value: i64 = 0;
        for (i, b) in bytes[1..].iter().enumerate().take(8) {
            value |= i64::from(*b) << (8 * i);
        }
        Ok(if bytes[0] != 0 { -value } else { value })
    }
}

impl<R: Read> Read for Chunks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let n = self.int()?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = u64::try_from(n).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a negative chunk length")
            })?;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got as u64;
        self.consumed.fetch_add(got as u64, Ordering::Relaxed);
        Ok(got)
    }
}

/// The COPY text of `table` (rows in the archive's encoding, each ending in a newline),
/// decompressed; `None` for a compression this reader does not inflate (lz4, zstd).
pub(crate) fn open(
    path: &Path,
    walk: &Walk,
    table: &TableData,
    consumed: Arc<AtomicU64>,
) -> io::Result<Option<Box<dyn Read + Send>>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(table.start))?;
    let mut chunks = Chunks {
        inner: BufReader::with_capacity(1 << 20, file),
        int_size: walk.int_size,
        left: 0,
        done: false,
        consumed,
    };
    let mut kind = [0u8; 1];
    chunks.inner.read_exact(&mut kind)?;
    let id = chunks.int()?;
    if kind[0] != 1 || id != table.id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "byte {} is not the start of the data of {} (block type {}, entry {id})",
                table.start, table.name, kind[0]
            ),
        ));
    }
    Ok(match walk.compression {
        "gzip" => Some(Box::new(flate2::read::ZlibDecoder::new(chunks))),
        "none" => Some(Box::new(chunks)),
        _ => None,
    })
}

/// Where the rows end in `data`, the end of a COPY text: pg_dump writes `\.` on a line
/// of its own after the last row (and blank lines after it). A data value can never
/// make such a line: COPY text doubles every backslash in the data.
pub(crate) fn rows_end(data: &[u8]) -> usize {
    let mut end = data.len();
    while end > 0 && data[end - 1] == b'\n' {
        end -= 1;
    }
    let last = &data[..end];
    if last == b"\\." {
        0
    } else if last.ends_with(b"\n\\.") {
        end - 2
    } else {
        data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::rows_end;

    #[test]
    fn the_end_marker_and_the_blank_lines_after_it_are_not_rows() {
        assert_eq!(rows_end(b"1\ta\n2\tb\n\\.\n\n\n"), 8);
        assert_eq!(rows_end(b"1\ta\n\\.\n"), 4);
        assert_eq!(rows_end(b"\\.\n\n"), 0);
        // A backslash-dot value is written doubled, so it is a row.
        assert_eq!(rows_end(b"1\t\\\\.\n"), 6);
        assert_eq!(rows_end(b"1\ta\n2\tb\n"), 8);
    }
}
