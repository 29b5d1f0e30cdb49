//! meshbench: conformance and load suites for Istio-style gateways: config validation and
//! planning, the load generator, and run reports.

pub mod cli;
pub mod conform;
pub mod distribute;
pub mod gate;
pub mod images;
pub mod load;
pub mod meta;
pub mod run;
pub mod targets;
