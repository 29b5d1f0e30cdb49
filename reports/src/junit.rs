//! JUnit XML as Ant's schema has it (the shape CI systems read): one `<testsuite>` per suite and
//! target with `tests`, `failures`, `errors`, `skipped`, `time`, `timestamp` and `hostname`; a
//! `<failure>` with a `type` and the readable expected/observed text; known differences and
//! skipped cases as `<skipped>`.

use std::fmt::Write;

use crate::model::{CaseOutcome, RunReport, SuiteResult};

/// XML-escapes text for attributes and element content; control characters XML 1.0 forbids
/// become spaces.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' | '\t' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// The failure's type: what kind of expectation failed, from the message's first words.
fn failure_type(outcome: CaseOutcome, message: &str) -> &'static str {
    if outcome == CaseOutcome::UnexpectedPass {
        return "UnexpectedPass";
    }
    let first = message.split([':', ';']).next().unwrap_or("");
    match first.trim() {
        "status" => "StatusMismatch",
        "body" | "body containing" => "BodyMismatch",
        "grpc-status" => "GrpcStatusMismatch",
        "the request failed" => "RequestFailed",
        s if s.starts_with("distribution") || s.contains("share") => "DistributionMismatch",
        s if s.starts_with("expected a") => "ExpectedFailureMissing",
        _ => "ExpectationFailed",
    }
}

fn suite_xml(o: &mut String, id: usize, s: &SuiteResult, timestamp: &str, hostname: &str) {
    let count = |f: &dyn Fn(CaseOutcome) -> bool| s.cases.iter().filter(|c| f(c.outcome)).count();
    let failures = count(&|k| matches!(k, CaseOutcome::Fail | CaseOutcome::UnexpectedPass));
    let skipped = count(&|k| matches!(k, CaseOutcome::Skip | CaseOutcome::ExpectedFailure));
    let time: f64 = s.cases.iter().map(|c| c.duration_ms).sum::<f64>() / 1000.0;
    let _ = writeln!(
        o,
        "  <testsuite id=\"{id}\" name=\"{}\" package=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\" hostname=\"{}\">",
        esc(&s.suite),
        esc(&s.target),
        s.cases.len(),
        esc(timestamp),
        esc(hostname)
    );
    let _ = write!(
        o,
        "    <properties>\n      <property name=\"target\" value=\"{}\"/>\n",
        esc(&s.target)
    );
    if let Some(m) = &s.mode {
        let _ = writeln!(o, "      <property name=\"mode\" value=\"{}\"/>", esc(m));
    }
    o.push_str("    </properties>\n");
    for c in &s.cases {
        let _ = write!(
            o,
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
            esc(&s.target),
            esc(&s.suite),
            esc(&c.id),
            c.duration_ms / 1000.0
        );
        let msg = c.message.as_deref().unwrap_or("");
        match c.outcome {
            CaseOutcome::Pass => o.push_str("/>\n"),
            CaseOutcome::Fail | CaseOutcome::UnexpectedPass => {
                let first = msg.split("; request:").next().unwrap_or(msg);
                let _ = writeln!(
                    o,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    esc(first),
                    failure_type(c.outcome, msg),
                    esc(&msg.replace("; ", "\n"))
                );
            }
            CaseOutcome::Skip | CaseOutcome::ExpectedFailure => {
                let _ = writeln!(o, ">\n      <skipped message=\"{}\"/>\n    </testcase>", esc(msg));
            }
        }
    }
    o.push_str("    <system-out/>\n    <system-err/>\n  </testsuite>\n");
}

/// A check that is not a conformance case (a threshold, a gate comparison): name, class,
/// and the failure (type, message) if it failed.
struct Check {
    class: String,
    name: String,
    failure: Option<(&'static str, String)>,
}

fn checks_xml(o: &mut String, id: usize, suite: &str, checks: &[Check], timestamp: &str, hostname: &str) {
    let failures = checks.iter().filter(|c| c.failure.is_some()).count();
    let _ = writeln!(
        o,
        "  <testsuite id=\"{id}\" name=\"{suite}\" package=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"0.000\" timestamp=\"{}\" hostname=\"{}\">\n    <properties/>",
        checks.len(),
        esc(timestamp),
        esc(hostname)
    );
    for c in checks {
        let _ = write!(
            o,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0.000\"",
            esc(&c.class),
            esc(&c.name)
        );
        match &c.failure {
            None => o.push_str("/>\n"),
            Some((kind, msg)) => {
                let _ = writeln!(
                    o,
                    ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    </testcase>",
                    esc(msg),
                    esc(msg)
                );
            }
        }
    }
    o.push_str("    <system-out/>\n    <system-err/>\n  </testsuite>\n");
}

/// Every threshold of every load result.
fn threshold_checks(report: &RunReport) -> Vec<Check> {
    report
        .load
        .iter()
        .flat_map(|r| {
            let class = format!("{}.{}", r.target.as_deref().unwrap_or("target"), r.scenario);
            r.thresholds.iter().map(move |t| Check {
                class: class.clone(),
                name: t.expression.clone(),
                failure: (!t.passed).then(|| ("ThresholdFailed", format!("{}: {}", t.expression, t.observed))),
            })
        })
        .collect()
}

/// The gate's conformance regressions and comparisons.
fn gate_checks(report: &RunReport) -> Vec<Check> {
    let Some(g) = &report.gate else { return Vec::new() };
    let mut out: Vec<Check> = g
        .conformance
        .iter()
        .map(|r| Check {
            class: format!("{}.{}", r.target, r.suite),
            name: format!("{} still passes", r.case),
            failure: Some((
                "ConformanceRegression",
                format!(
                    "passed in the baseline; now {}",
                    r.message.as_deref().unwrap_or("fails")
                ),
            )),
        })
        .collect();
    out.extend(g.comparisons.iter().map(|c| Check {
        class: format!("{}.{}", c.target, c.scenario),
        name: c.figure.clone(),
        failure: (c.outcome == crate::model::ChangeOutcome::Regression).then(|| {
            (
                "PerformanceRegression",
                format!(
                    "{} {:.1}% worse than the baseline (at most {:.1}%; p {:.1e} at level {:.1e})",
                    c.figure,
                    c.change * 100.0,
                    c.change_upper * 100.0,
                    c.p,
                    c.level
                ),
            )
        }),
    }));
    out
}

/// A report as JUnit XML: its conformance suites, then its thresholds and the gate's checks.
pub fn render(report: &RunReport) -> String {
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    // Ant's timestamp has no zone designator.
    let ts = report.meta.started_at.trim_end_matches('Z');
    let ts = ts.split('.').next().unwrap_or(ts);
    let host = &report.meta.host;
    for (i, s) in report.conformance.iter().enumerate() {
        suite_xml(&mut o, i, s, ts, host);
    }
    let mut id = report.conformance.len();
    for (name, checks) in [("thresholds", threshold_checks(report)), ("gate", gate_checks(report))] {
        if !checks.is_empty() {
            checks_xml(&mut o, id, name, &checks, ts, host);
            id += 1;
        }
    }
    o.push_str("</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(esc("a<b>&\"c\"'d'\u{1}"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos; ");
        assert_eq!(esc("line\nnext"), "line\nnext");
    }

    #[test]
    fn failure_types_name_the_expectation() {
        assert_eq!(
            failure_type(CaseOutcome::Fail, "status: expected \"200\""),
            "StatusMismatch"
        );
        assert_eq!(failure_type(CaseOutcome::Fail, "body: expected \"\""), "BodyMismatch");
        assert_eq!(
            failure_type(CaseOutcome::Fail, "grpc-status: expected"),
            "GrpcStatusMismatch"
        );
        assert_eq!(
            failure_type(CaseOutcome::Fail, "the request failed: connect"),
            "RequestFailed"
        );
        assert_eq!(
            failure_type(CaseOutcome::Fail, "expected a handshake failure"),
            "ExpectedFailureMissing"
        );
        assert_eq!(failure_type(CaseOutcome::UnexpectedPass, "status: x"), "UnexpectedPass");
        assert_eq!(failure_type(CaseOutcome::Fail, "location: x"), "ExpectationFailed");
    }
}
