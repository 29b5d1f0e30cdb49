//! mesh-model: Istio's networking API from plain YAML, validated with Istio's rules and compiled
//! into the Plan that meshgate executes and the Envoy target exports. Pure: no I/O but reading files.

pub mod api;
pub mod config;
pub mod decode;
pub mod diag;
pub mod envoy;
pub mod host;
pub mod load;
pub mod plan;
pub mod time;
pub mod validate;

pub use config::{load_paths, load_str, Config, Loaded};
pub use diag::{Code, Diagnostic, Severity};
