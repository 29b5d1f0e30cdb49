//! Writing a report's files into a directory: the one place every subcommand does it.

use std::path::Path;

use crate::model::RunReport;

/// `report.json` (the RunReport), `junit.xml` (when it has conformance results) and `report.html`.
pub fn write(dir: &Path, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    json(&dir.join("report.json"), report)?;
    if !report.conformance.is_empty() || report.gate.is_some() || report.load.iter().any(|r| !r.thresholds.is_empty()) {
        std::fs::write(dir.join("junit.xml"), crate::junit::render(report))?;
    }
    std::fs::write(dir.join("report.html"), crate::html::render(report))
}

/// The report as pretty JSON.
pub fn json(path: &Path, report: &RunReport) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}
