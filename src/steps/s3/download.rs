//! The download: parallel ranged GETs pinned to one object version, each written
//! straight from the socket into `<dest>.drrun-part` at its offset; the file hashed in
//! order from the page cache while the download goes on; durability points that a
//! resume continues from; verified, fsync'd and renamed only when complete.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use md5::Digest as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::fetch::S3Fetch;
use crate::outcome::{Failure, FailureClass};
use crate::services::s3::{self, ObjectVersion, RangeError, fetch_range};
use crate::steps::StepCtx;
use crate::util::fs::{sidecar, sync_dir, write_atomic};

const DEFAULT_CONCURRENCY: usize = 4;
/// At most this much is hashed between durability points (fsync + progress record)
/// unless one part is larger; smaller objects get one every eighth of their size
/// (`sync_interval`).
const SYNC_EVERY: u64 = 256 << 20;
/// Hashing reads the written file back in windows of this size.
const HASH_WINDOW: u64 = 4 << 20;

const DEFAULT_PART: u64 = 8 << 20;

/// Progress of an interrupted download, next to the partial file.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Partial {
    bucket: String,
    key: String,
    etag: String,
    version_id: Option<String>,
    size: u64,
    /// Bytes from the start that are on disk, fsync'd and hashed in order.
    verified: u64,
}

/// The digests computed while the parts stream through.
struct Digests {
    sha: Sha256,
    md5: Option<md5::Md5>,
}

impl Digests {
    fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        if let Some(m) = self.md5.as_mut() {
            m.update(data);
        }
    }
}

/// Replaces the partial-download record atomically.
fn write_meta(path: &Path, partial: &Partial) -> Result<(), Failure> {
    write_atomic(path, &serde_json::to_vec(partial).unwrap(), false).map_err(|e| io(path, e))
}

pub(super) fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure::new(FailureClass::Other, format!("{}: {e}", path.display()))
}

/// Downloads into `<dest>.drrun-part`, verifies, renames. Parts are fetched in
/// parallel but hashed in order; returns the file's sha256 (hex).
pub(super) async fn download(
    cfg: &S3Fetch,
    ctx: &StepCtx,
    client: &s3::Client,
    key: &str,
    head: &s3::Head,
    dest: &Path,
) -> Result<String, Failure> {
    let (etag, version_id, size) = (head.etag.as_str(), head.version_id.as_deref(), head.size);
    let full_sha256 = head.full_sha256.as_deref();
    let part_path = sidecar(dest, ".drrun-part");
    let meta_path = sidecar(dest, ".drrun-part.json");
    let part_size = cfg
        .part_size
        .map(|p| p.0.max(1 << 20))
        .unwrap_or(DEFAULT_PART);
    let concurrency = cfg
        .concurrency
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_CONCURRENCY)
        .max(1);

    // Resume only when the partial download is of this very object version.
    let previous: Option<Partial> = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // A single-part upload's ETag is the md5 of the content; a multipart one is not,
    // and then md5 (the slowest part of hashing) is not computed at all; nor is it
    // when the store keeps a full-object sha256, which is checked instead.
    let etag_is_md5 = etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit());
    let check_md5 = etag_is_md5 && full_sha256.is_none();
    let mut digests = Digests {
        sha: Sha256::new(),
        md5: check_md5.then(md5::Md5::new),
    };
    let mut verified = 0u64;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part_path)
        .map_err(|e| io(&part_path, e))?;
    if let Some(p) = previous
        && p.bucket == cfg.bucket
        && p.key == key
        && p.etag == etag
        && p.size == size
        && p.version_id.as_deref() == version_id
    {
        // Re-hash the verified prefix from disk (local, fast) to continue the digest.
        let prefix = p
            .verified
            .min(file.metadata().map(|m| m.len()).unwrap_or(0));
        read_mapped(&file, 0, prefix, |b| digests.update(b)).map_err(|e| io(&part_path, e))?;
        verified = prefix;
        if verified > 0 {
            ctx.note(format!(
                "resuming the download at {verified} of {size} bytes"
            ));
        }
    }
    file.set_len(size).map_err(|e| io(&part_path, e))?;
    let partial = Partial {
        bucket: cfg.bucket.clone(),
        key: key.to_string(),
        etag: etag.to_string(),
        version_id: version_id.map(str::to_string),
        size,
        verified,
    };
    write_meta(&meta_path, &partial)?;

    // Each ranged GET writes its bytes at their offsets as they arrive and keeps none:
    // the data goes from the socket to the page cache, nowhere else. Beside the
    // downloads, so that no one waits for another:
    // - the hasher reads the file back in order through a read-only mapping of the
    //   page cache (no copy; sha256 cannot be parallel), and md5 (only for
    //   single-part ETags) does the same on a core of its own. What is hashed is
    //   what was written, so the check covers the file, not just the network;
    // - the durability thread makes the hashed prefix durable and records it every
    //   `sync_every` bytes (a resume re-fetches at most that much), so the hasher
    //   never waits for the disk.
    let file = Arc::new(file);
    let sync_every = sync_interval(size, part_size);
    // Hashed ranges `(start, len)`, in order, for the durability thread.
    let (sync_tx, sync_rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let durability = {
        let file = file.clone();
        let (path, meta) = (part_path.clone(), meta_path.clone());
        let mut partial = partial;
        tokio::task::spawn_blocking(move || -> (u64, Option<Failure>) {
            let durable = |partial: &mut Partial, upto: u64| {
                file.sync_data().map_err(|e| io(&path, e))?;
                partial.verified = upto;
                write_meta(&meta, partial)
            };
            let mut hashed = partial.verified;
            while let Ok((start, len)) = sync_rx.recv() {
                let mut end = start + len;
                // The ranges come in order: take all that are waiting as one.
                while let Ok((s, l)) = sync_rx.try_recv() {
                    end = s + l;
                }
                // Start writing these pages to disk now, so that the next
                // durability point (and the last one) has little left to wait for.
                start_writeback(&file, hashed, end - hashed);
                hashed = end;
                if hashed - partial.verified >= sync_every
                    && let Err(e) = durable(&mut partial, hashed)
                {
                    return (partial.verified, Some(e));
                }
            }
            // The hashers are done, whatever ended them: the whole file on success,
            // the prefix to resume from if not.
            if hashed > partial.verified
                && let Err(e) = durable(&mut partial, hashed)
            {
                return (partial.verified, Some(e));
            }
            (partial.verified, None)
        })
    };
    // Ranges `(start, len)` that are written, in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    // How far the hasher has got: the downloads may not run too far ahead of it.
    let (hashed_tx, mut hashed_rx) = tokio::sync::watch::channel(verified);
    let hasher = {
        let (file, path, ctx) = (file.clone(), part_path.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || -> Result<Digests, Failure> {
            let md5_worker = digests.md5.take().map(|mut md5| {
                let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
                let file = file.clone();
                let worker = std::thread::spawn(move || -> std::io::Result<md5::Md5> {
                    for (start, len) in rx {
                        read_mapped(&file, start, len, |b| md5.update(b))?;
                    }
                    Ok(md5)
                });
                (tx, worker)
            });
            let mut result = Ok(());
            while let Some((start, len)) = rx.blocking_recv() {
                if let Err(e) = read_mapped(&file, start, len, |b| digests.sha.update(b)) {
                    result = Err(io(&path, e));
                    break;
                }
                if let Some((tx, _)) = &md5_worker {
                    let _ = tx.send((start, len));
                }
                let _ = sync_tx.send((start, len));
                let _ = hashed_tx.send(start + len);
                ctx.progress(start + len, Some(size));
            }
            drop(sync_tx);
            if let Some((tx, worker)) = md5_worker {
                drop(tx);
                match worker.join().expect("md5 thread") {
                    Ok(md5) => digests.md5 = Some(md5),
                    Err(e) => result = Err(io(&path, e)),
                }
            }
            result.map(|()| digests)
        })
    };

    let s3 = Arc::new(client.s3.clone());
    let object = Arc::new(ObjectVersion {
        bucket: cfg.bucket.clone(),
        key: key.to_string(),
        etag: etag.to_string(),
        version: version_id.map(str::to_string),
    });
    let mut next_start = verified;
    let mut next_send = verified;
    let mut in_flight = tokio::task::JoinSet::new();
    // Parts written but not yet next in order: start -> length.
    let mut ready: BTreeMap<u64, u64> = BTreeMap::new();
    let mut failure: Option<Failure> = None;
    let mut cancelled = false;
    ctx.progress(verified, Some(size));
    // Parts may start at most this far ahead of the hashed prefix: when hashing is the
    // slower side (md5, a slow core) the downloads wait for it rather than leave a
    // long stretch that is on disk but not yet verified, to re-fetch after a crash.
    let ahead = part_size * 2 * concurrency as u64;
    while next_send < size && failure.is_none() {
        while let Some(len) = ready.remove(&next_send) {
            let _ = tx.send((next_send, len));
            next_send += len;
        }
        if next_send >= size {
            break;
        }
        let window_end = *hashed_rx.borrow_and_update() + ahead;
        while next_start < size && in_flight.len() < concurrency && next_start < window_end {
            let start = next_start;
            let end = (start + part_size).min(size) - 1;
            next_start = end + 1;
            let (s3, object, file) = (s3.clone(), object.clone(), file.clone());
            in_flight.spawn(async move {
                let result = fetch_range(&s3, &object, start, end, &file).await;
                (start, end + 1 - start, result)
            });
        }
        tokio::select! {
            joined = in_flight.join_next(), if !in_flight.is_empty() => {
                let Some(joined) = joined else { break };
                let (start, len, result) = joined.expect("range task");
                let at = || format!("s3://{}/{key} (bytes {start}-)", cfg.bucket);
                match result {
                    Ok(()) => { ready.insert(start, len); }
                    Err(RangeError::Sdk(e)) => {
                        failure = Some(s3::classify(&e, &at(), client, &cfg.bucket));
                    }
                    Err(RangeError::Body(m)) => {
                        failure = Some(Failure::new(FailureClass::Ambiguous, format!("{}: {m}", at())));
                    }
                    Err(RangeError::Write(e)) => {
                        failure = Some(io(&part_path, e));
                    }
                }
            }
            // Only the hasher's progress can open the window again; if the hasher
            // stopped, its error is reported below.
            changed = hashed_rx.changed(), if next_start < size && next_start >= window_end => {
                if changed.is_err() {
                    break;
                }
            }
            () = ctx.cancel.cancelled() => {
                cancelled = true;
                break;
            }
        }
    }
    in_flight.abort_all();
    drop(tx);
    let hashing = hasher.await.expect("hasher thread");
    let (kept, sync_failure) = durability.await.expect("durability thread");
    if cancelled {
        return Err(Failure::new(FailureClass::Other, "download cancelled"));
    }
    let digests = match (failure.or(sync_failure), hashing) {
        (None, Ok(digests)) if next_send == size => digests,
        (None, Ok(_)) => {
            return Err(Failure::new(
                FailureClass::Other,
                format!("the download stopped at {next_send} of {size} bytes"),
            ));
        }
        (Some(e), _) | (None, Err(e)) => {
            return Err(Failure::new(
                e.class,
                format!("{} ({kept} of {size} bytes kept for resuming)", e.message),
            ));
        }
    };
    let digest = digests.sha.finalize();
    let sha_hex = hex::encode(digest);
    let md5_hex = digests
        .md5
        .map(|m| hex::encode(m.finalize()))
        .unwrap_or_default();
    let mismatch = if let Some(expected) = full_sha256 {
        use base64::Engine as _;
        let ours = base64::engine::general_purpose::STANDARD.encode(digest);
        (ours != expected)
            .then(|| format!("sha256 {ours} does not match the stored checksum {expected}"))
    } else if check_md5 && etag != md5_hex {
        Some(format!("md5 {md5_hex} does not match the ETag {etag}"))
    } else {
        None
    };
    if let Some(m) = mismatch {
        let _ = std::fs::remove_file(&part_path);
        let _ = std::fs::remove_file(&meta_path);
        return Err(Failure::new(
            FailureClass::Assertion,
            format!(
                "checksum mismatch for s3://{}/{key}: {m}; the partial file was removed",
                cfg.bucket
            ),
        ));
    }
    std::fs::rename(&part_path, dest).map_err(|e| io(dest, e))?;
    if let Some(dir) = dest.parent() {
        sync_dir(dir);
    }
    let _ = std::fs::remove_file(&meta_path);
    Ok(sha_hex)
}

/// Bytes between durability points: an eighth of the object, at most SYNC_EVERY, and
/// never less than a part (the unit a resume re-fetches anyway).
fn sync_interval(size: u64, part_size: u64) -> u64 {
    (size / 8).min(SYNC_EVERY).max(part_size)
}

/// Asks the kernel to start writing a range of the file to disk, without waiting.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a valid descriptor; a failure only means the pages
    // are written back later (the fdatasync that follows is what counts).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _start: u64, _len: u64) {}

/// Feeds `len` bytes of `file` from `start` to `f`, through read-only mappings of the
/// page cache (the bytes were just written, so no disk read and no copy).
fn read_mapped(
    file: &std::fs::File,
    start: u64,
    len: u64,
    mut f: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let end = start + len;
    let mut at = start;
    while at < end {
        let until = (at + HASH_WINDOW).min(end);
        let base = at - at % page;
        let map_len = (until - base) as usize;
        // SAFETY: a fresh read-only shared mapping of a range of our own partial file,
        // which was sized to the object before any part was fetched and is only
        // written (never truncated) while we hash; the slice does not outlive the
        // mapping.
        unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                base as libc::off_t,
            );
            if ptr == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let bytes = std::slice::from_raw_parts(ptr as *const u8, map_len);
            f(&bytes[(at - base) as usize..]);
            libc::munmap(ptr, map_len);
        }
        at = until;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_points_come_every_eighth_within_bounds() {
        const MIB: u64 = 1 << 20;
        assert_eq!(sync_interval(1024 * MIB, 8 * MIB), 128 * MIB);
        assert_eq!(sync_interval(16 * 1024 * MIB, 8 * MIB), SYNC_EVERY);
        assert_eq!(sync_interval(10 * MIB, 8 * MIB), 8 * MIB, "at least a part");
        // Parts larger than SYNC_EVERY (this used to panic in clamp).
        assert_eq!(sync_interval(4096 * MIB, 512 * MIB), 512 * MIB);
    }
}
