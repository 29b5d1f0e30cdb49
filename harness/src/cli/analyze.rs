//! `meshbench analyze <path>…`: istioctl analyze's messages for config files, with Istio's
//! codes and levels. Webhook errors and warnings appear as istioctl shows them (IST0106,
//! IST0133; unreachable rules and matches as IST0130/IST0131). Exits 79, as istioctl does, when
//! a message is at or above `--failure-threshold`.

use std::path::PathBuf;

use clap::ValueEnum;
use mesh_model::{Code, Diagnostic, Severity};
use serde::Serialize;

use super::{exit, sorted};

/// istioctl's exit code when the analyzers found issues (`ExitAnalyzerFoundIssues`).
pub const FOUND_ISSUES: u8 = 79;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per message, as istioctl prints them.
    Log,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn of(s: Severity) -> Level {
        match s {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
            Severity::Info => Level::Info,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursive, *.yaml and *.yml); `-` reads stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A MeshConfig file (istioctl's `--meshConfigFile`).
    #[arg(long, alias = "meshConfigFile")]
    pub mesh: Option<PathBuf>,
    /// `log` (istioctl's lines), `json` or `yaml` (istioctl's message objects).
    #[arg(long, short, value_enum, default_value = "log")]
    pub output: Format,
    /// Exit 79 when a message is at least this level.
    #[arg(long, value_enum, ignore_case = true, default_value = "error")]
    pub failure_threshold: Level,
    /// Print messages of at least this level.
    #[arg(long, value_enum, ignore_case = true, default_value = "info")]
    pub output_threshold: Level,
    /// Drop messages: `CODE=KIND NAMESPACE/NAME` (or `CODE=KIND NAME`), `*` matching any text,
    /// e.g. `IST0101=VirtualService default/*`. Repeatable.
    #[arg(long, short = 'S')]
    pub suppress: Vec<String>,
}

/// One message, in istioctl's JSON shape.
#[derive(Debug, Serialize)]
struct Message {
    code: &'static str,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    message: String,
    #[serde(rename = "documentationUrl")]
    documentation_url: String,
    /// meshbench's own code for a webhook message (IST0106/IST0133), and the field and hint.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

/// A diagnostic as istioctl analyze reports it, or None for what it does not report (loader
/// notes, the missing-namespace warning: istioctl uses `default` silently).
fn as_istio(d: &Diagnostic) -> Option<(Code, Level, String, Option<&'static str>)> {
    if let Some(level) = d.code.istio_level() {
        return Some((d.code, Level::of(level), d.message.clone(), None));
    }
    match d.severity {
        Severity::Error => Some((
            Code::SchemaValidationError,
            Level::Error,
            format!("Schema validation error: {}", d.message),
            Some(d.code.id()),
        )),
        Severity::Warning if d.code != Code::DefaultNamespace => Some((
            Code::SchemaWarning,
            Level::Warning,
            format!("Schema validation warning: {}", d.message),
            Some(d.code.id()),
        )),
        _ => None,
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

fn suppressed(rules: &[(String, String)], code: Code, d: &Diagnostic) -> bool {
    let Some(r) = &d.resource else { return false };
    let full = format!("{} {}/{}", r.kind, r.namespace, r.name);
    let short = format!("{} {}", r.kind, r.name);
    rules
        .iter()
        .any(|(c, res)| glob(c, code.id()) && (glob(res, &full) || glob(res, &short)))
}

pub fn run(args: &Args) -> u8 {
    let mut rules = Vec::new();
    for s in &args.suppress {
        match s.split_once('=') {
            Some((code, res)) if !code.is_empty() && !res.is_empty() => rules.push((code.to_string(), res.to_string())),
            _ => {
                eprintln!("error: --suppress `{s}` is not CODE=KIND NAMESPACE/NAME (e.g. `IST0101=VirtualService default/reviews`)");
                return exit::USAGE;
            }
        }
    }
    let (_, diags) = match super::load_validated(&args.paths, args.mesh.as_deref()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut messages = Vec::new();
    let mut worst: Option<Level> = None;
    for d in sorted(diags) {
        let Some((code, level, text, detail)) = as_istio(&d) else {
            continue;
        };
        if suppressed(&rules, code, &d) {
            continue;
        }
        worst = worst.max(Some(level));
        if level < args.output_threshold {
            continue;
        }
        let reference = d.file.as_ref().map(|f| match d.line {
            Some(l) => format!("{f}:{l}"),
            None => f.clone(),
        });
        messages.push(Message {
            code: code.id(),
            level: level.name(),
            origin: d
                .resource
                .as_ref()
                .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name)),
            reference,
            message: text,
            documentation_url: format!(
                "https://istio.io/latest/docs/reference/config/analysis/{}/",
                code.id().to_ascii_lowercase()
            ),
            detail,
            field: d.field.clone(),
            hint: d.hint.clone(),
        });
    }
    match args.output {
        Format::Json | Format::Yaml => {
            let out = if args.output == Format::Json {
                super::Output::Json
            } else {
                super::Output::Yaml
            };
            let code = super::emit(&messages, out);
            if code != exit::OK {
                return code;
            }
        }
        Format::Log => {
            for m in &messages {
                let origin = match (&m.origin, &m.reference) {
                    (Some(o), Some(r)) => format!(" ({o} {r})"),
                    (Some(o), None) => format!(" ({o})"),
                    _ => String::new(),
                };
                println!("{} [{}]{origin} {}", m.level, m.code, m.message);
                if let Some(h) = &m.hint {
                    println!("  = hint: {h}");
                }
            }
            if messages.is_empty() {
                let files: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
                eprintln!(
                    "\u{2714} No validation issues found when analyzing {}.",
                    files.join(", ")
                );
            }
        }
    }
    if worst.is_some_and(|w| w >= args.failure_threshold) {
        FOUND_ISSUES
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn suppression_patterns_match_with_stars() {
        assert!(glob("IST0101", "IST0101"));
        assert!(glob("IST01*", "IST0101"));
        assert!(glob("VirtualService default/*", "VirtualService default/reviews"));
        assert!(glob("*", ""));
        assert!(!glob("VirtualService default/*", "VirtualService other/reviews"));
        assert!(!glob("IST0101", "IST0102"));
        assert!(glob("a*b*c", "aXbYc") && !glob("a*b*c", "aXbY"));
    }
}
