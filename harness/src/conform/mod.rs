//! Conformance: suites of cases run against a target, reported case by case (terminal, JSON,
//! JUnit), with each target's known differences.

pub mod capture;
pub mod check;
pub mod client;
pub mod run;
pub mod suite;
pub mod tls;
pub mod workloads;
