//! meshbench-report: one `RunReport` for everything meshbench measures (run metadata, targets,
//! conformance results, load results), its versioned JSON Schema, and renderers that are
//! functions of the model alone, so a saved `run.json` can be rendered again later.

pub mod charts;
pub mod html;
pub mod junit;
pub mod model;
pub mod text;
pub mod write;

pub use model::*;

/// The JSON Schema of `RunReport`, generated from the model.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RunReport)).unwrap_or_default()
}

/// The checked-in schema file's path inside this crate.
pub const SCHEMA_FILE: &str = "schema/run-report.schema.json";
