//! meshbench: conformance and load suites for Istio-style gateways. Today: `validate` and `plan`
//! over Istio config files; the suites, targets and load generator build on these.

pub mod cli;
