//! Everything the user sees of a run: the drill report (its model, built from the
//! journal alone, and its renderings) and the printer, the only place that writes to the
//! terminal.

pub(crate) mod history;
pub(crate) mod junit;
pub(crate) mod markdown;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod printer;

use std::path::{Path, PathBuf};

use crate::util::fs::write_atomic;
use model::DrillReport;

/// Writes `report.json`, `report.md` and `junit.xml` into `dir`, each through a temporary
/// file renamed into place, so a reader never sees half a report.
pub(crate) fn write_files(report: &DrillReport, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)? + "\n";
    let files = [
        ("report.json", json),
        ("report.md", markdown::render(report)),
        ("junit.xml", junit::render(report)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes(), true)?;
        written.push(path);
    }
    Ok(written)
}
