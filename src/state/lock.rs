//! One drill per state directory at a time: an advisory `flock` on `<state>/lock`,
//! whose content names the holder. The kernel drops the lock when its holder dies, so a
//! lock file that still names a holder but can be locked was left by a dead process:
//! that is the stale case, taken over with a notice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StateError, io_err};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    pub host: String,
    pub run_id: Option<String>,
    pub started_at: String,
    pub playbook: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)?;
        if let Some(run) = &self.run_id {
            write!(f, ", run {run}")?;
        }
        write!(f, ", playbook {}, since {}", self.playbook, self.started_at)
    }
}

pub(crate) struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock. Returns the previous holder when a stale lock was taken over.
    pub(crate) fn acquire(
        dir: &Path,
        holder: &Holder,
    ) -> Result<(Self, Option<Holder>), StateError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(&text)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|_| "a process that has not written its details yet".into());
                return Err(StateError::Locked {
                    dir: dir.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let stale = serde_json::from_str::<Holder>(&previous).ok();
        let lock = Self { file, path };
        lock.write(holder)?;
        Ok((lock, stale))
    }

    /// Rewrites the holder (e.g. once the run id is known).
    pub(crate) fn write(&self, holder: &Holder) -> Result<(), StateError> {
        let mut f = &self.file;
        let text = serde_json::to_string(holder).expect("holder serializes");
        f.set_len(0).map_err(io_err(&self.path))?;
        f.rewind().map_err(io_err(&self.path))?;
        f.write_all(text.as_bytes()).map_err(io_err(&self.path))?;
        f.sync_data().map_err(io_err(&self.path))
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // An empty lock file means "released cleanly"; the flock goes with the handle.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32) -> Holder {
        Holder {
            pid,
            host: "h".into(),
            run_id: None,
            started_at: "t".into(),
            playbook: "p.yaml".into(),
        }
    }

    #[test]
    fn second_acquire_names_the_holder_and_release_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, stale) = StateLock::acquire(dir.path(), &holder(1)).unwrap();
        assert!(stale.is_none());
        let err = StateLock::acquire(dir.path(), &holder(2))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("pid 1 on h"), "{err}");
        drop(lock);
        let (_lock, stale) = StateLock::acquire(dir.path(), &holder(3)).unwrap();
        assert!(stale.is_none(), "a cleanly released lock is not stale");
    }
}
