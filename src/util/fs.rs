//! Filesystem durability: what must survive a crash is written to a temporary file,
//! fsync'd and renamed into place, and the new directory entry is fsync'd too.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Makes a new (or renamed) directory entry durable. Failures are ignored: some
/// filesystems cannot fsync a directory, and the data itself was already synced.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `path` with `suffix` appended to its file name (`x.pgdump` -> `x.pgdump.drrun-part`).
pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Replaces `path` with `bytes` atomically: a reader sees the old content or the new,
/// never half of either. With `durable`, the data and the rename survive a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable && let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Bytes an unprivileged user may still write on the filesystem holding `path` (its
/// nearest existing ancestor), or `None` when the system cannot say.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_atomic(&p, b"old", true).unwrap();
        write_atomic(&p, b"new", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        assert_eq!(sidecar(&p, ".part"), dir.path().join("report.json.part"));
    }
}
