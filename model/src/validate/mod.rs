//! Istio's validation rules (`pkg/config/validation`) per resource, and the cross-resource checks
//! of `istioctl analyze`. Returns every problem, each tied to file, line and field path.

mod analyze;
mod common;
mod destination_rule;
mod gateway;
mod http;
mod service_entry;
mod unreachable;
mod virtual_service;

use crate::api::{Resource, Spec};
use crate::config::Config;
use crate::diag::{Code, Diagnostic, ResourceRef, Severity};

/// Every problem of a config: per-resource rules first (in load order), then cross-resource checks.
pub fn validate(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for res in &config.resources {
        let mut sink = Sink::new(res);
        match &res.spec {
            Spec::Gateway(g) => gateway::validate(&mut sink, g),
            Spec::VirtualService(vs) => virtual_service::validate(&mut sink, vs),
            Spec::DestinationRule(dr) => destination_rule::validate(&mut sink, dr),
            Spec::ServiceEntry(se) => service_entry::validate_service_entry(&mut sink, se),
            Spec::WorkloadEntry(we) => service_entry::validate_workload_entry(&mut sink, we, "spec"),
        }
        out.extend(sink.out);
    }
    out.extend(analyze::analyze(config));
    out
}

/// Collects the diagnostics of one resource.
pub(crate) struct Sink<'a> {
    pub res: &'a Resource,
    pub out: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(res: &'a Resource) -> Self {
        Sink { res, out: Vec::new() }
    }

    pub fn report(&mut self, severity: Severity, code: Code, path: &str, message: String, hint: &str) {
        let src = &self.res.source;
        let mut d = Diagnostic::new(severity, code, message)
            .with_hint(hint)
            .at(&src.file, src.line_of(path));
        d.resource = Some(ResourceRef {
            kind: self.res.kind().name().into(),
            namespace: self.res.namespace().into(),
            name: self.res.name().into(),
        });
        d.field = (!path.is_empty()).then(|| path.to_string());
        self.out.push(d);
    }

    pub fn error(&mut self, code: Code, path: &str, message: impl Into<String>, hint: &str) {
        self.report(Severity::Error, code, path, message.into(), hint);
    }

    pub fn warn(&mut self, code: Code, path: &str, message: impl Into<String>, hint: &str) {
        self.report(Severity::Warning, code, path, message.into(), hint);
    }
}

#[cfg(test)]
mod tests;
