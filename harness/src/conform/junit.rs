//! JUnit XML: one testsuite per suite, failures with the expected/observed text.

use std::fmt::Write;

use meshbench_report::{CaseOutcome, SuiteResult};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(suites: &[SuiteResult]) -> String {
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for s in suites {
        let failures = s
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, CaseOutcome::Fail | CaseOutcome::UnexpectedPass))
            .count();
        let skipped = s
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, CaseOutcome::Skip | CaseOutcome::ExpectedFailure))
            .count();
        let _ = writeln!(
            o,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            esc(&s.suite),
            s.cases.len()
        );
        for c in &s.cases {
            let _ = write!(
                o,
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
                esc(&s.target),
                esc(&s.suite),
                esc(&c.id),
                c.duration_ms / 1000.0
            );
            let msg = esc(c.message.as_deref().unwrap_or(""));
            match c.outcome {
                CaseOutcome::Pass => o.push_str("/>\n"),
                CaseOutcome::Fail | CaseOutcome::UnexpectedPass => {
                    let _ = writeln!(
                        o,
                        ">\n      <failure message=\"{msg}\">{msg}</failure>\n    </testcase>"
                    );
                }
                CaseOutcome::Skip | CaseOutcome::ExpectedFailure => {
                    let _ = writeln!(o, ">\n      <skipped message=\"{msg}\"/>\n    </testcase>");
                }
            }
        }
        o.push_str("  </testsuite>\n");
    }
    o.push_str("</testsuites>\n");
    o
}
