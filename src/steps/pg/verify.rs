//! Checking an archive before anything is dropped (`verify_archive`), so a dump that is
//! not whole never costs the existing DR database.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::archive::Format;
use crate::outcome::{Failure, FailureClass};
use crate::services::pg::dump::{self, WalkError};
use crate::services::pg::{Conn, clean, run_client};
use crate::steps::StepCtx;
use crate::util::human_bytes;

/// How the archive is checked before anything is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verify {
    /// Walk a custom-format archive's blocks without decompressing them: every table's
    /// data the table of contents promises is in the file and whole (what a full disk,
    /// a killed pg_dump or a cut-off upload leaves). It reads the file once and costs
    /// about 1% of a restore. Other formats are read in full.
    Blocks,
    /// Read and decompress everything (`pg_restore -f /dev/null`): also finds bytes
    /// flipped inside a compressed block, at about a fifth of a restore's time.
    Full,
    /// No check (what `restore_into: temporary` needs: nothing is dropped before the
    /// restore has passed).
    Off,
}

/// What `verify_archive` accepts: a mode, or `true` (`full`) and `false` (`off`).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum VerifySetting {
    Mode(Verify),
    /// `true` is `full`, `false` is `off`.
    Flag(bool),
}

impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            // `true` meant the full read before `blocks` existed.
            Raw::Flag(true) => Ok(Self::Full),
            Raw::Flag(false) => Ok(Self::Off),
            Raw::Text(t) => match t.as_str() {
                "blocks" => Ok(Self::Blocks),
                "full" => Ok(Self::Full),
                "off" => Ok(Self::Off),
                _ => Err(serde::de::Error::custom(format!(
                    "`verify_archive` is `blocks`, `full`, `off` (or true/false), not `{t}`"
                ))),
            },
        }
    }
}

impl Verify {
    /// For the plan: what the check would be.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::Blocks => {
                "blocks (every data block present and whole; formats other than custom are read in full)"
            }
            Self::Full => "full (pg_restore reads and decompresses all of it)",
            Self::Off => "off",
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Blocks => "blocks",
            Self::Full => "full",
            Self::Off => "off",
        }
    }
}

/// Checks the archive at `path` as `mode` says; returns how it was checked in the end
/// (`blocks` falls back to `full` for what the walk does not read), and the walk.
pub(super) async fn verify(
    mode: Verify,
    format: Format,
    path: &Path,
    bin: Option<&str>,
    ctx: &StepCtx,
) -> Result<(Verify, Option<dump::Walk>), Failure> {
    let damaged = |why: String| {
        Failure::new(
            FailureClass::Assertion,
            format!("archive {} is truncated or corrupt: {why}", path.display()),
        )
    };
    if mode == Verify::Off || !format.uses_pg_restore() {
        return Ok((Verify::Off, None));
    }
    if mode == Verify::Blocks && format == Format::Custom {
        ctx.phase("verifying the archive (every data block, before anything is dropped)");
        let began = std::time::Instant::now();
        let owned = path.to_path_buf();
        let cancel = ctx.cancel.clone();
        let walked =
            tokio::task::spawn_blocking(move || dump::walk(&owned, &|| cancel.is_cancelled()))
                .await
                .map_err(|e| Failure::new(FailureClass::Other, format!("archive check: {e}")))?;
        match walked {
            Ok(w) => {
                let largest = w
                    .largest
                    .as_ref()
                    .map(|(name, bytes)| {
                        format!("; the largest is {name}, {}", human_bytes(*bytes))
                    })
                    .unwrap_or_default();
                ctx.note(format!(
                    "archive whole: {} data block(s), {} of data (archive {}, {}){largest}; checked in {:.2} s",
                    w.blocks,
                    human_bytes(w.data_bytes),
                    w.version,
                    w.compression,
                    began.elapsed().as_secs_f64()
                ));
                return Ok((Verify::Blocks, Some(w)));
            }
            Err(WalkError::Damaged(why)) => return Err(damaged(why)),
            Err(WalkError::Cancelled) => {
                return Err(Failure::new(
                    FailureClass::Other,
                    "the archive check was cancelled",
                ));
            }
            Err(WalkError::Io(e)) => {
                return Err(Failure::config(format!(
                    "cannot read archive {}: {e}",
                    path.display()
                )));
            }
            Err(WalkError::Unsupported(why)) => {
                ctx.note(format!(
                    "the block check does not read this archive ({why}): reading it in full"
                ));
            }
        }
    }
    ctx.phase("verifying the archive (reading it once before anything is dropped)");
    let mut cmd = Conn::default().command(bin, "pg_restore");
    cmd.args(["-f", "/dev/null"]).arg(path);
    let out = run_client(cmd, "pg_restore", None, &ctx.cancel).await?;
    if out.code() != Some(0) {
        return Err(damaged(clean(&out.stderr_text())));
    }
    Ok((Verify::Full, None))
}

/// The walk of a custom-format file, for what reads it (a split restore), or `None`.
pub(super) async fn walk_quietly(path: &Path) -> Option<dump::Walk> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || dump::walk(&owned, &|| false).ok())
        .await
        .ok()
        .flatten()
}
