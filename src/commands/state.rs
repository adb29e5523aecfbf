//! Where runs are kept: `--state-dir DIR` (one playbook's directory), `--state STORE`
//! (a store of many playbooks: a directory like `.drrun/`, or `s3://BUCKET/PREFIX`), or
//! the playbook's default `.drrun/<name>/`. An S3 store is read through local mirrors:
//! a run's in the cache (written only by the lease's holder), and a throwaway one for
//! `status`, `report` and finding the run to resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;

use crate::error::Error;
use crate::state::runs::{StateDir, default_state_dir};
use crate::state::s3::{S3Location, S3State};

/// A `--state` value.
pub(crate) enum Store {
    Dir(PathBuf),
    S3(S3Location),
}

impl Store {
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        if S3Location::is_s3(text) {
            S3Location::parse(text)
                .map(Self::S3)
                .map_err(|e| Error::Usage(format!("--state: {e}")))
        } else {
            Ok(Self::Dir(crate::util::expand_home(text)))
        }
    }
}

/// A playbook's name in a store: its file stem, as in `.drrun/<name>/`.
pub(crate) fn store_name(playbook: &Path) -> String {
    default_state_dir(playbook)
        .file_name()
        .map_or_else(|| "playbook".into(), |n| n.to_string_lossy().to_string())
}

/// The state a run of `playbook` writes.
pub(crate) fn run_state(
    state: Option<&str>,
    state_dir: Option<&Path>,
    playbook: &Path,
) -> Result<StateDir, Error> {
    if let Some(dir) = state_dir {
        return Ok(StateDir::new(dir));
    }
    let name = store_name(playbook);
    match state.map(Store::parse).transpose()? {
        None => Ok(StateDir::new(default_state_dir(playbook))),
        Some(Store::Dir(root)) => Ok(StateDir::new(root.join(name))),
        Some(Store::S3(loc)) => s3_run_state(&loc.join(&name)),
    }
}

/// A playbook's S3 state, mirrored in the cache directory named after the store's URL.
pub(crate) fn s3_run_state(loc: &S3Location) -> Result<StateDir, Error> {
    let store = Arc::new(S3State::connect(loc)?);
    let hash = hex::encode(sha2::Sha256::digest(loc.url().as_bytes()));
    let dir = cache_root().join("state").join(&hash[..16]);
    Ok(StateDir::mirroring(dir, store))
}

fn cache_root() -> PathBuf {
    std::env::var_os("DRRUN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("drrun")))
        .unwrap_or_else(|| crate::util::expand_home("~/.cache/drrun"))
}

/// Where a readable copy of a store keeps a playbook's lease, when one is held.
pub(crate) const LEASE_COPY: &str = "lease.json";

/// A store's runs made readable as state directories: for S3, pulled into a temporary
/// directory (removed when this is dropped), one subdirectory a playbook.
pub(crate) struct Readable {
    /// The store's root as a directory (`<root>/<playbook>/runs/...`).
    pub root: PathBuf,
    pub s3: Option<S3Location>,
    temporary: bool,
}

impl Drop for Readable {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Opens `--state STORE` for reading; only `playbook`'s runs when one is named.
pub(crate) fn readable(store: &str, playbook: Option<&Path>) -> Result<Readable, Error> {
    match Store::parse(store)? {
        Store::Dir(root) => Ok(Readable {
            root,
            s3: None,
            temporary: false,
        }),
        Store::S3(loc) => {
            let root = std::env::temp_dir().join(format!(
                "drrun-state-{}-{:x}",
                std::process::id(),
                chrono::Utc::now().timestamp_subsec_nanos()
            ));
            let readable = Readable {
                root: root.clone(),
                s3: Some(loc.clone()),
                temporary: true,
            };
            let fleet = S3State::connect(&loc)?;
            let names = match playbook {
                Some(p) => vec![store_name(p)],
                None => fleet.playbooks()?,
            };
            for name in names {
                let one = fleet.join(&name);
                let dir = root.join(&name);
                one.pull(&dir)?;
                // Whether a run is alive is its lease's to say (the fleet view reads it).
                if let Some((lease, _)) = one.get("lock")? {
                    let path = dir.join(LEASE_COPY);
                    std::fs::write(&path, lease).map_err(crate::state::io_err(&path))?;
                }
            }
            Ok(readable)
        }
    }
}
