//! The framing of a pg_dump custom-format archive, read without decompressing anything:
//! the header, the table of contents, and every data block's chunk lengths. A walk over
//! it proves that each data block the TOC promises is in the file and whole, which is
//! how dumps go bad in practice (a full disk, a killed pg_dump, an upload cut short),
//! at the cost of reading the file rather than inflating and formatting all of it as
//! `pg_restore -f /dev/null` does. Bytes flipped inside a compressed block are not seen
//! here; the restore itself reports those.
//!
//! The layout follows PostgreSQL's `pg_backup_archiver.c` (`ReadHead`, `ReadToc`,
//! `ReadInt`, `ReadStr`, `ReadOffset`) and `pg_backup_custom.c` (`_readBlockHeader`,
//! `_skipData`, `_skipLOs`), archive versions 1.10 (PostgreSQL 8.4) to 1.16
//! (PostgreSQL 17 and 18). A version outside that range is `Unsupported`, never guessed.

use std::collections::BTreeMap;
use std::io::{BufReader, ErrorKind, Read, Seek};
use std::path::Path;

/// What a walk found in a whole archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Archive version, `1.14`.
    pub version: String,
    /// `none`, `gzip`, `lz4` or `zstd`.
    pub compression: &'static str,
    /// TOC entries.
    pub entries: usize,
    /// Data blocks (tables' data and large-object groups), each seen whole.
    pub blocks: usize,
    /// Bytes of data blocks (as stored, compressed).
    pub data_bytes: u64,
    /// The entry with the most data: `TABLE DATA public.events` and its bytes.
    pub largest: Option<(String, u64)>,
    /// Tables' data blocks, the largest first: what a parallel load can read directly.
    pub tables: Vec<TableData>,
    /// The archive's `client_encoding` (its `ENCODING` entry), which its COPY data is in.
    pub encoding: Option<String>,
    /// The header's integer size, which a block's framing is written with.
    pub int_size: u8,
}

/// One table's data block: where it is and the COPY statement that loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableData {
    /// The TOC entry's id (the first field of its `pg_restore -l` line).
    pub id: i64,
    /// `TABLE DATA public.events`.
    pub name: String,
    /// `COPY public.events (id, at) FROM stdin;`
    pub copy: String,
    /// The schema the entry is in (for an unqualified COPY of an old archive).
    pub namespace: String,
    /// Where the block starts, and its length as stored.
    pub start: u64,
    pub bytes: u64,
}

/// Why a walk did not vouch for an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// Not something this walk reads (another format, a version it does not know): the
    /// caller falls back to reading the archive with pg_restore.
    Unsupported(String),
    /// The file is not whole: where, and what is missing.
    Damaged(String),
    /// The file could not be read at all.
    Io(String),
    /// Stopped by the caller.
    Cancelled,
}

const K_OFFSET_POS_NOT_SET: u8 = 1;
const K_OFFSET_POS_SET: u8 = 2;
const K_OFFSET_NO_DATA: u8 = 3;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const ARCH_CUSTOM: u8 = 1;

/// One TOC entry, as far as the walk needs it.
struct Entry {
    id: i64,
    name: String,
    desc: String,
    namespace: String,
    copy: Option<String>,
    data: u8,
    pos: u64,
}

/// Walks the custom-format archive at `path`; `cancelled` is asked every few thousand
/// chunks, so a walk of a huge file stops with the step.
pub(crate) fn walk(path: &Path, cancelled: &dyn Fn() -> bool) -> Result<Walk, WalkError> {
    let file = std::fs::File::open(path).map_err(|e| WalkError::Io(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| WalkError::Io(e.to_string()))?
        .len();
    walk_from(BufReader::with_capacity(256 * 1024, file), len, cancelled)
}

fn walk_from<R: Read + Seek>(
    inner: BufReader<R>,
    len: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Walk, WalkError> {
    let mut r = Reader {
        inner,
        pos: 0,
        len,
        int_size: 4,
        off_size: 8,
        version: (1, 0, 0),
    };
    let (version, compression) = r.header()?;
    let entries = r.toc()?;
    let mut data: BTreeMap<i64, &Entry> = BTreeMap::new();
    for e in &entries {
        if e.data != K_OFFSET_NO_DATA {
            data.insert(e.id, e);
        }
    }
    let mut seen: BTreeMap<i64, u64> = BTreeMap::new();
    let mut tables = Vec::new();
    let mut chunks = 0u64;
    // Blocks follow the TOC back to back until the end of the file.
    loop {
        let start = r.pos;
        let Some(kind) = r.byte_or_end()? else { break };
        let id = r.int("a data block's entry id")?;
        let Some(entry) = data.get(&id) else {
            return Err(WalkError::Damaged(format!(
                "a data block at byte {start} names entry {id}, which the table of contents has no data for"
            )));
        };
        if entry.data == K_OFFSET_POS_SET && entry.pos != start {
            return Err(WalkError::Damaged(format!(
                "the data of {} is at byte {start}, not at byte {} where the table of contents puts it",
                entry.name, entry.pos
            )));
        }
        let what = &entry.name;
        match kind {
            BLK_DATA => r.skip_chunks(what, &mut chunks, cancelled)?,
            BLK_BLOBS => loop {
                let oid = r.int(&format!("a large object's OID in {what}"))?;
                if oid == 0 {
                    break;
                }
                r.skip_chunks(what, &mut chunks, cancelled)?;
            },
            other => {
                return Err(WalkError::Damaged(format!(
                    "byte {start} holds a block of unknown type {other}: not a data block boundary"
                )));
            }
        }
        if seen.insert(id, r.pos - start).is_some() {
            return Err(WalkError::Damaged(format!(
                "the data of {what} appears twice"
            )));
        }
        if let (BLK_DATA, "TABLE DATA", Some(copy)) = (kind, entry.desc.as_str(), &entry.copy)
            && copy.starts_with("COPY ")
        {
            tables.push(TableData {
                id,
                name: entry.name.clone(),
                copy: copy.trim_end().to_string(),
                namespace: entry.namespace.clone(),
                start,
                bytes: r.pos - start,
            });
        }
    }
    let missing: Vec<&str> = data
        .values()
        .filter(|e| !seen.contains_key(&e.id))
        .map(|e| e.name.as_str())
        .collect();
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let more = missing.len().saturating_sub(3);
        return Err(WalkError::Damaged(format!(
            "the file ends after {len} bytes without the data of {} entr{} ({shown}{})",
            missing.len(),
            if missing.len() == 1 { "y" } else { "ies" },
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    let largest = seen
        .iter()
        .max_by_key(|(id, bytes)| (**bytes, -**id))
        .and_then(|(id, bytes)| data.get(id).map(|e| (e.name.clone(), *bytes)));
    tables.sort_by_key(|t| (std::cmp::Reverse(t.bytes), t.id));
    // `SET client_encoding = 'UTF8';`
    let encoding = entries
        .iter()
        .find(|e| e.desc == "ENCODING")
        .and_then(|e| e.copy.as_deref())
        .and_then(|d| d.split('\'').nth(1))
        .map(str::to_string);
    Ok(Walk {
        version: format!("{}.{}", version.0, version.1),
        compression,
        entries: entries.len(),
        blocks: seen.len(),
        data_bytes: seen.values().sum(),
        largest,
        tables,
        encoding,
        int_size: r.int_size,
    })
}

struct Reader<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
    int_size: u8,
    off_size: u8,
    version: (u8, u8, u8),
}

impl<R: Read + Seek> Reader<R> {
    fn at_least(&self, v: u8) -> bool {
        self.version >= (1, v, 0)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), WalkError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(WalkError::Damaged(format!(
                "the file ends after {} bytes, inside {what}",
                self.len
            ))),
            Err(e) => Err(WalkError::Io(e.to_string())),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, WalkError> {
        let mut b = [0u8; 1];
        self.fill(&mut b, what)?;
        Ok(b[0])
    }

    /// A byte, or `None` exactly at the end of the file (between blocks).
    fn byte_or_end(&mut self) -> Result<Option<u8>, WalkError> {
        if self.pos >= self.len {
            return Ok(None);
        }
        self.byte("a data block's header").map(Some)
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self, what: &str) -> Result<i64, WalkError> {
        let sign = self.byte(what)?;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            let b = self.byte(what)?;
            if i < 8 {
                value |= i64::from(b) << (8 * u32::from(i));
            }
        }
        Ok(if sign != 0 { -value } else { value })
    }

    /// `ReadStr`: a length (-1 for none), then the bytes.
    fn string(&mut self, what: &str) -> Result<Option<String>, WalkError> {
        let n = self.int(what)?;
        if n < 0 {
            return Ok(None);
        }
        let n = u64::try_from(n).unwrap_or(0);
        if n > self.len.saturating_sub(self.pos) {
            return Err(WalkError::Damaged(format!(
                "{what} at byte {} claims {n} bytes, more than the file has left: the table of contents is cut off or corrupt",
                self.pos
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.fill(&mut buf, what)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn header(&mut self) -> Result<((u8, u8, u8), &'static str), WalkError> {
        let mut magic = [0u8; 5];
        self.fill(&mut magic, "the header")?;
        if &magic != b"PGDMP" {
            return Err(WalkError::Unsupported("not a custom-format archive".into()));
        }
        let (major, minor) = (self.byte("the header")?, self.byte("the header")?);
        let rev = if major > 1 || (major == 1 && minor > 0) {
            self.byte("the header")?
        } else {
            0
        };
        self.version = (major, minor, rev);
        if self.version < (1, 10, 0) || self.version > (1, 16, 255) {
            return Err(WalkError::Unsupported(format!(
                "archive version {major}.{minor}, which this check does not know"
            )));
        }
        self.int_size = self.byte("the header")?;
        self.off_size = self.byte("the header")?;
        if !(1..=8).contains(&self.int_size) || !(1..=16).contains(&self.off_size) {
            return Err(WalkError::Damaged(format!(
                "the header's integer size {} or offset size {} is impossible",
                self.int_size, self.off_size
            )));
        }
        let format = self.byte("the header")?;
        if format != ARCH_CUSTOM {
            return Err(WalkError::Unsupported(format!(
                "archive format code {format}, not custom"
            )));
        }
        let compression = if self.at_least(15) {
            match self.byte("the header")? {
                0 => "none",
                1 => "gzip",
                2 => "lz4",
                3 => "zstd",
                other => {
                    return Err(WalkError::Unsupported(format!(
                        "compression method {other}"
                    )));
                }
            }
        } else if self.int("the header")? != 0 {
            "gzip"
        } else {
            "none"
        };
        for _ in 0..7 {
            self.int("the header's date")?;
        }
        self.string("the header")?; // database name
        self.string("the header")?; // server version
        self.string("the header")?; // pg_dump version
        Ok((self.version, compression))
    }

    fn toc(&mut self) -> Result<Vec<Entry>, WalkError> {
        let what = "the table of contents";
        let count = self.int(what)?;
        if count < 0 || count as u64 > self.len {
            return Err(WalkError::Damaged(format!(
                "the table of contents claims {count} entries"
            )));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = self.int(what)?;
            if id <= 0 {
                return Err(WalkError::Damaged(format!(
                    "a TOC entry has id {id}: the table of contents is corrupt"
                )));
            }
            self.int(what)?; // had a data dumper
            self.string(what)?; // table oid
            self.string(what)?; // oid
            let tag = self.string(what)?.unwrap_or_default();
            let desc = self.string(what)?.unwrap_or_default();
            if self.at_least(11) {
                self.int(what)?; // section
            }
            let definition = self.string(what)?;
            self.string(what)?; // drop statement
            let copy = self.string(what)?;
            let namespace = self.string(what)?;
            self.string(what)?; // tablespace
            if self.at_least(14) {
                self.string(what)?; // table access method
            }
            if self.at_least(16) {
                self.int(what)?; // relkind
            }
            self.string(what)?; // owner
            self.string(what)?; // "false": WITH OIDS
            while self.string(what)?.is_some() {} // dependencies
            let mut flag = self.byte(what)?;
            let mut pos = 0u64;
            for i in 0..self.off_size {
                let b = self.byte(what)?;
                if i < 8 {
                    pos |= u64::from(b) << (8 * u32::from(i));
                }
            }
            if !matches!(
                flag,
                K_OFFSET_POS_NOT_SET | K_OFFSET_POS_SET | K_OFFSET_NO_DATA
            ) {
                return Err(WalkError::Damaged(format!(
                    "TOC entry {id} has data offset flag {flag}: the table of contents is corrupt"
                )));
            }
            if flag == K_OFFSET_POS_SET && pos >= self.len {
                // Its data would start past the end: it was cut off.
                flag = K_OFFSET_POS_NOT_SET;
            }
            let namespace = namespace.unwrap_or_default();
            let name = match namespace.as_str() {
                _ if desc == "BLOBS" => "the large objects".to_string(),
                "" => format!("{desc} {tag}"),
                ns => format!("{desc} {ns}.{tag}"),
            };
            // The ENCODING entry's statement is all that is kept of any definition.
            let copy = if desc == "ENCODING" { definition } else { copy };
            entries.push(Entry {
                id,
                name,
                desc,
                namespace,
                copy,
                data: flag,
                pos,
            });
        }
        Ok(entries)
    }

    /// `_skipData`: length-prefixed chunks up to a zero length.
    fn skip_chunks(
        &mut self,
        what: &str,
        chunks: &mut u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), WalkError> {
        loop {
            let n = self.int(&format!("the data of {what}"))?;
            if n == 0 {
                return Ok(());
            }
            let left = self.len.saturating_sub(self.pos);
            if n < 0 || n as u64 > left {
                return Err(WalkError::Damaged(format!(
                    "the file ends after {} bytes, inside the data of {what} ({} bytes short)",
                    self.len,
                    (n.max(0) as u64).saturating_sub(left)
                )));
            }
            self.inner
                .seek_relative(n)
                .map_err(|e| WalkError::Io(e.to_string()))?;
            self.pos += n as u64;
            *chunks += 1;
            if (*chunks).is_multiple_of(4096) && cancelled() {
                return Err(WalkError::Cancelled);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives the way pg_dump does (`WriteHead`, `WriteToc`, `_StartData`, ...).
    struct Writer {
        out: Vec<u8>,
        version: u8,
    }

    impl Writer {
        fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            let v = v.unsigned_abs();
            for i in 0..4 {
                self.out.push((v >> (8 * i)) as u8);
            }
        }
        fn string(&mut self, s: Option<&str>) {
            match s {
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
                None => self.int(-1),
            }
        }
        fn head(&mut self) {
            self.out.extend_from_slice(b"PGDMP");
            self.out
                .extend_from_slice(&[1, self.version, 0, 4, 8, ARCH_CUSTOM]);
            if self.version >= 15 {
                self.out.push(1);
            } else {
                self.int(-1);
            }
            for v in [1, 2, 3, 4, 5, 126, 0] {
                self.int(v);
            }
            for s in ["src", "15.8", "15.8"] {
                self.string(Some(s));
            }
        }
        fn entry(&mut self, id: i64, desc: &str, tag: &str, data: u8, pos: u64) {
            self.int(id);
            self.int(i64::from(data != K_OFFSET_NO_DATA));
            self.string(Some("1259"));
            self.string(Some("16384"));
            self.string(Some(tag));
            self.string(Some(desc));
            self.int(2);
            for s in [Some("defn"), Some(""), None, Some("public"), Some("")] {
                self.string(s);
            }
            if self.version >= 14 {
                self.string(Some("heap"));
            }
            if self.version >= 16 {
                self.int(i64::from(b'r'));
            }
            self.string(Some("owner"));
            self.string(Some("false"));
            self.string(Some("1"));
            self.string(None);
            self.out.push(data);
            self.out.extend_from_slice(&pos.to_le_bytes());
        }
        fn block(&mut self, kind: u8, id: i64, chunks: &[usize]) {
            self.out.push(kind);
            self.int(id);
            for &n in chunks {
                self.int(n as i64);
                self.out.extend(std::iter::repeat_n(0xab, n));
            }
            self.int(0);
        }
    }

    /// An archive with two tables' data and, for 1.14+, a large-object group; offsets
    /// set the way a seekable pg_dump rewrites its TOC, or not set as through a pipe.
    fn archive(version: u8, offsets: bool) -> Vec<u8> {
        // The TOC's size does not depend on the offsets' values: write it twice.
        let build = |positions: &[u64]| {
            let mut w = Writer {
                out: Vec::new(),
                version,
            };
            w.head();
            w.int(4);
            w.entry(1, "TABLE", "events", K_OFFSET_NO_DATA, 0);
            let flag = if offsets {
                K_OFFSET_POS_SET
            } else {
                K_OFFSET_POS_NOT_SET
            };
            w.entry(2, "TABLE DATA", "events", flag, positions[0]);
            w.entry(3, "TABLE DATA", "pages", flag, positions[1]);
            w.entry(4, "BLOBS", "BLOBS", flag, positions[2]);
            let mut at = Vec::new();
            at.push(w.out.len() as u64);
            w.block(BLK_DATA, 2, &[4096, 4096, 100]);
            at.push(w.out.len() as u64);
            w.block(BLK_DATA, 3, &[10]);
            at.push(w.out.len() as u64);
            w.out.push(BLK_BLOBS);
            w.int(4);
            for oid in [16500, 16501] {
                w.int(oid);
                for n in [7, 0] {
                    w.int(n);
                    w.out.extend(std::iter::repeat_n(1, n as usize));
                }
            }
            w.int(0);
            (w.out, at)
        };
        let (_, at) = build(&[0, 0, 0]);
        build(&at).0
    }

    fn walk_bytes(bytes: &[u8]) -> Result<Walk, WalkError> {
        let reader = BufReader::new(std::io::Cursor::new(bytes));
        walk_from(reader, bytes.len() as u64, &|| false)
    }

    #[test]
    fn a_whole_archive_is_walked_block_by_block_in_every_known_version() {
        for version in [12, 14, 15, 16] {
            for offsets in [true, false] {
                let w = walk_bytes(&archive(version, offsets)).unwrap();
                assert_eq!(w.version, format!("1.{version}"));
                assert_eq!((w.entries, w.blocks), (4, 3), "1.{version} {offsets}");
                assert_eq!(w.largest.as_ref().unwrap().0, "TABLE DATA public.events");
                assert_eq!(w.compression, "gzip");
            }
        }
    }

    #[test]
    fn every_cut_of_an_archive_is_damaged_and_says_where() {
        let whole = archive(14, true);
        for cut in 1..whole.len() {
            let err = walk_bytes(&whole[..cut]).unwrap_err();
            let WalkError::Damaged(msg) = &err else {
                panic!("cut at {cut}: {err:?}");
            };
            assert!(
                msg.contains("ends") || msg.contains("claims"),
                "cut at {cut}: {msg}"
            );
        }
    }

    #[test]
    fn an_archive_cut_between_blocks_names_the_missing_data() {
        let whole = archive(16, false);
        // Find where the pages block starts: walk to it by searching its header.
        let mut header = vec![BLK_DATA, 0];
        header.extend_from_slice(&3u32.to_le_bytes());
        let at = whole
            .windows(header.len())
            .rposition(|w| w == header.as_slice())
            .unwrap();
        let err = walk_bytes(&whole[..at]).unwrap_err();
        assert_eq!(
            err,
            WalkError::Damaged(format!(
                "the file ends after {at} bytes without the data of 2 entries (TABLE DATA public.pages, the large objects)"
            ))
        );
    }

    #[test]
    fn other_formats_and_unknown_versions_are_left_to_pg_restore() {
        assert!(matches!(
            walk_bytes(b"-- PostgreSQL database dump\n"),
            Err(WalkError::Unsupported(_))
        ));
        let mut future = archive(16, true);
        future[6] = 17;
        assert!(matches!(
            walk_bytes(&future),
            Err(WalkError::Unsupported(_))
        ));
    }

    #[test]
    fn a_block_out_of_place_is_damage() {
        let mut bytes = archive(14, true);
        // Point the pages data at the events block.
        let mut header = vec![BLK_DATA, 0];
        header.extend_from_slice(&3u32.to_le_bytes());
        let at = bytes
            .windows(header.len())
            .rposition(|w| w == header.as_slice())
            .unwrap();
        bytes[at + 2] = 9;
        let err = walk_bytes(&bytes).unwrap_err();
        assert!(
            matches!(&err, WalkError::Damaged(m) if m.contains("names entry 9")),
            "{err:?}"
        );
    }
}
