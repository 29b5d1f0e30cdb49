//! Writing a report's files into a directory: the one place that does it for every subcommand.

use std::path::Path;

use crate::model::RunReport;

/// `conformance.json` (the RunReport) and `junit.xml`.
pub fn conformance(dir: &Path, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    json(&dir.join("conformance.json"), report)?;
    std::fs::write(dir.join("junit.xml"), crate::junit::render(report))
}

/// The report as pretty JSON.
pub fn json(path: &Path, report: &RunReport) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}
