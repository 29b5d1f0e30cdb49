//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched): run
//! metadata, the conformance matrix (case x target, failures expandable to what was expected and
//! observed), and per load scenario the latency-by-percentile curves of every target and the
//! direct baseline, the per-second rate and p99, and a table of what each gateway adds.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::charts::{self, Series};
use crate::junit::esc;
use crate::model::{CaseOutcome, LoadResult, RunReport};
use crate::text::{mib, outcome_label, us};

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#1d1d1f}
h1{font-size:24px;margin:8px 0} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px} h3{margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{background:#e6f4ea;color:#137333} .fail,.unexpected_pass{background:#fce8e6;color:#a50e0e}
.expected_failure{background:#fef7e0;color:#8a5a00} .skip{background:#f1f3f4;color:#5f6368} .none{color:#aaa}
details summary{cursor:pointer} pre{white-space:pre-wrap;max-width:520px;margin:4px 0;font-size:12px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px} dl.meta dt{color:#5f6368}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:8px 16px;align-items:start}
figure.chart{margin:0} figure.chart svg{width:100%;height:auto}
.charts table.added{grid-column:1/-1} details.suite{margin:6px 0} details.suite>summary{font-weight:600}
ul.legend{list-style:none;padding:0;margin:2px 0} ul.legend li{display:inline-block;margin-right:14px}
ul.legend i{display:inline-block;width:18px;height:3px;margin-right:5px;vertical-align:middle}
.scenario{border-top:1px dashed #ccc;padding-top:8px} .muted{color:#5f6368}
";

/// A report's histograms decoded: `text` is HdrHistogram V2 deflate, base64.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("bad base64: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("bad histogram: {e:?}"))
}

/// The whole page.
pub fn render(report: &RunReport) -> String {
    let m = &report.meta;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width\">\n\
         <title>meshbench run on {} at {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&m.host),
        esc(&m.started_at)
    );
    let _ = writeln!(o, "<header><h1>meshbench run</h1>\n<dl class=\"meta\">");
    let rows = [
        (
            "meshbench",
            format!("{} {}", m.version, m.git_revision.as_deref().unwrap_or("")),
        ),
        ("host", format!("{} ({} cores)", m.host, m.cores)),
        ("started", m.started_at.clone()),
        ("command", m.command.join(" ")),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "<dt>{k}</dt><dd>{}</dd>", esc(v.trim()));
    }
    o.push_str("</dl></header>\n");
    o.push_str(&targets(report));
    if let Some(g) = &report.gate {
        o.push_str(&gate(g));
    }
    if !report.conformance.is_empty() {
        o.push_str(&matrix(report));
    }
    if !report.load.is_empty() {
        o.push_str(&load(report));
    }
    o.push_str("</body>\n</html>\n");
    o
}

fn targets(report: &RunReport) -> String {
    let mut o = String::from(
        "<section id=\"targets\"><h2>Targets</h2>\n<table class=\"targets\"><thead><tr><th>target</th><th>kind</th>\
         <th>version</th><th>address</th><th>passed</th><th>failed</th><th>expected failures</th><th>skipped</th></tr></thead><tbody>\n",
    );
    for t in &report.targets {
        let count = |f: &dyn Fn(CaseOutcome) -> bool| {
            report
                .conformance
                .iter()
                .filter(|s| s.target == t.name)
                .flat_map(|s| &s.cases)
                .filter(|c| f(c.outcome))
                .count()
        };
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&t.name),
            esc(&t.kind),
            esc(t.version.as_deref().unwrap_or("")),
            esc(t.address.as_deref().unwrap_or("")),
            count(&|k| k == CaseOutcome::Pass),
            count(&|k| matches!(k, CaseOutcome::Fail | CaseOutcome::UnexpectedPass)),
            count(&|k| k == CaseOutcome::ExpectedFailure),
            count(&|k| k == CaseOutcome::Skip),
        );
    }
    o.push_str("</tbody></table></section>\n");
    o
}

/// The gate's verdict and every comparison it made.
fn gate(g: &crate::model::GateReport) -> String {
    use crate::model::{ChangeOutcome, GateVerdict};
    let verdict = match g.verdict {
        GateVerdict::Pass => ("pass", "pass"),
        GateVerdict::Regression => ("fail", "REGRESSION"),
        GateVerdict::CannotCompare => ("skip", "could not compare"),
    };
    let mut o = format!(
        "<section id=\"gate\"><h2>Gate: <span class=\"{}\">{}</span></h2>\n<p class=\"muted\">Against the baseline of {} on {}; \
         false alarms held at {} over all {} comparisons; changes shown to be under {:.0}% are noise.</p>\n",
        verdict.0,
        verdict.1,
        esc(&g.baseline.started_at),
        esc(&g.baseline.host),
        g.alpha,
        g.comparisons.len(),
        g.noise * 100.0
    );
    for r in &g.conformance {
        let _ = writeln!(
            o,
            "<p class=\"fail\">conformance regression: {}/{} on {}: {}</p>",
            esc(&r.suite),
            esc(&r.case),
            esc(&r.target),
            esc(r.message.as_deref().unwrap_or("fails"))
        );
    }
    o.push_str("<table class=\"gate\"><thead><tr><th>target</th><th>scenario</th><th>figure</th><th>baseline</th><th>current</th><th>change</th><th>at most</th><th>p</th><th>outcome</th></tr></thead><tbody>\n");
    for c in &g.comparisons {
        let (class, label) = match c.outcome {
            ChangeOutcome::Regression => ("fail", "regression"),
            ChangeOutcome::Improvement => ("pass", "improved"),
            ChangeOutcome::WithinNoise => ("skip", "within noise"),
            ChangeOutcome::NoChange => ("none", "no change"),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:+.1}%</td><td class=\"num\">{:+.1}%</td><td class=\"num\">{:.1e}</td><td class=\"{class}\">{label}</td></tr>",
            esc(&c.target),
            esc(&c.scenario),
            esc(&c.figure),
            c.baseline,
            c.current,
            c.change * 100.0,
            c.change_upper * 100.0,
            c.p
        );
    }
    o.push_str("</tbody></table>\n");
    for w in &g.warnings {
        let _ = writeln!(o, "<p class=\"muted\">warning: {}</p>", esc(w));
    }
    o.push_str("</section>\n");
    o
}

fn class(o: CaseOutcome) -> &'static str {
    match o {
        CaseOutcome::Pass => "pass",
        CaseOutcome::Fail => "fail",
        CaseOutcome::Skip => "skip",
        CaseOutcome::ExpectedFailure => "expected_failure",
        CaseOutcome::UnexpectedPass => "unexpected_pass",
    }
}

/// Case x target, one table per suite; a cell with a message expands to it, and a suite where
/// every case passed on every target starts folded.
fn matrix(report: &RunReport) -> String {
    let names: Vec<&str> = report
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| report.conformance.iter().any(|s| s.target == *n))
        .collect();
    let mut suites: Vec<&str> = Vec::new();
    for s in &report.conformance {
        if !suites.contains(&s.suite.as_str()) {
            suites.push(&s.suite);
        }
    }
    let mut o = String::from("<section id=\"conformance\"><h2>Conformance</h2>\n");
    for suite in suites {
        o.push_str(&suite_matrix(report, suite, &names));
    }
    o.push_str("</section>\n");
    o
}

type Cells<'a> = BTreeMap<&'a str, (CaseOutcome, Option<&'a str>)>;

fn suite_matrix(report: &RunReport, suite: &str, names: &[&str]) -> String {
    let mut rows: Vec<(&str, Cells)> = Vec::new();
    for s in report.conformance.iter().filter(|s| s.suite == suite) {
        for c in &s.cases {
            let at = match rows.iter().position(|(r, _)| *r == c.id) {
                Some(i) => i,
                None => {
                    rows.push((&c.id, BTreeMap::new()));
                    rows.len() - 1
                }
            };
            rows[at].1.insert(s.target.as_str(), (c.outcome, c.message.as_deref()));
        }
    }
    let all_pass = rows
        .iter()
        .all(|(_, cells)| cells.values().all(|(o, _)| *o == CaseOutcome::Pass));
    let summary = if all_pass {
        format!("{suite}: all {} cases pass on every target", rows.len())
    } else {
        format!("{suite}: {} cases", rows.len())
    };
    let mut o = format!(
        "<details class=\"suite\"{}><summary>{}</summary>\n<table class=\"matrix\"><thead><tr><th>case</th>",
        if all_pass { "" } else { " open" },
        esc(&summary)
    );
    for n in names {
        let _ = write!(o, "<th>{}</th>", esc(n));
    }
    o.push_str("</tr></thead><tbody>\n");
    for s in report.conformance.iter().filter(|s| s.suite == suite) {
        if let Some(m) = &s.mode {
            let _ = writeln!(
                o,
                "<tr class=\"mode\"><td colspan=\"{}\">on {}: {}</td></tr>",
                names.len() + 1,
                esc(&s.target),
                esc(m)
            );
        }
    }
    for (id, cells) in &rows {
        let _ = write!(o, "<tr class=\"case\"><th>{}/{}</th>", esc(suite), esc(id));
        for n in names {
            match cells.get(n) {
                None => o.push_str("<td class=\"none\">-</td>"),
                Some((outcome, None)) | Some((outcome @ CaseOutcome::Pass, _)) => {
                    let _ = write!(o, "<td class=\"{}\">{}</td>", class(*outcome), outcome_label(*outcome));
                }
                Some((outcome, Some(msg))) => {
                    let _ = write!(
                        o,
                        "<td class=\"{}\"><details><summary>{}</summary><pre>{}</pre></details></td>",
                        class(*outcome),
                        outcome_label(*outcome),
                        esc(&msg.replace("; ", "\n"))
                    );
                }
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></details>\n");
    o
}

/// The repetitions of one scenario on one target, merged.
struct Side<'a> {
    name: &'a str,
    runs: Vec<&'a LoadResult>,
    merged: Histogram<u64>,
}

impl Side<'_> {
    fn p(&self, q: f64) -> u64 {
        if self.merged.is_empty() {
            0
        } else {
            self.merged.value_at_quantile(q)
        }
    }

    fn mean(&self, f: impl Fn(&LoadResult) -> f64) -> f64 {
        self.runs.iter().map(|r| f(r)).sum::<f64>() / self.runs.len().max(1) as f64
    }
}

fn sides<'a>(report: &'a RunReport, scenario: &str) -> Vec<Side<'a>> {
    let mut out: Vec<Side<'a>> = Vec::new();
    for r in report.load.iter().filter(|r| r.scenario == scenario) {
        let name = r.target.as_deref().unwrap_or("target");
        let h = decode_histogram(&r.histograms.corrected).ok();
        let at = match out.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                let empty = Histogram::new_with_bounds(1, 60_000_000, 3).ok();
                let Some(merged) = empty.or_else(|| h.clone()) else {
                    continue;
                };
                out.push(Side {
                    name,
                    runs: Vec::new(),
                    merged,
                });
                out.len() - 1
            }
        };
        out[at].runs.push(r);
        if let Some(h) = h {
            out[at].merged.auto(true);
            let _ = out[at].merged.add(&h);
        }
    }
    // The baseline last, so the targets keep their colours across scenarios.
    out.sort_by_key(|s| s.name == "direct");
    out
}

fn legend(series: &[Series]) -> String {
    let mut o = String::from("<ul class=\"legend\">");
    for s in series {
        let _ = write!(
            o,
            "<li><i style=\"background:{}\"></i>{}</li>",
            charts::hex(s.color),
            esc(&s.name)
        );
    }
    o.push_str("</ul>");
    o
}

fn figure(kind: &str, svg: &str, series: &[Series]) -> String {
    format!(
        "<figure class=\"chart {kind}\" data-series=\"{}\">{svg}<figcaption>{}</figcaption></figure>\n",
        series.len(),
        legend(series)
    )
}

fn load(report: &RunReport) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &report.load {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut o = String::from("<section id=\"load\"><h2>Load</h2>\n");
    for sc in scenarios {
        o.push_str(&scenario(report, sc));
    }
    o.push_str("</section>\n");
    o
}

fn scenario(report: &RunReport, name: &str) -> String {
    let sides = sides(report, name);
    let Some(first) = sides.first().and_then(|s| s.runs.first()) else {
        return String::new();
    };
    let s = &first.settings;
    let mode = match s.rate {
        Some(r) => format!("open loop at {r} rps"),
        None => "closed loop (maximum throughput)".into(),
    };
    let mut o = format!(
        "<article class=\"scenario\" id=\"scenario-{}\"><h3>{}</h3>\n<p class=\"muted\">{}, {mode}, {} connections x {} streams, \
         {:.1}s measured after {:.1}s warm-up, {} repetition(s)</p>\n",
        esc(name),
        esc(name),
        esc(&s.protocol),
        s.connections,
        s.streams,
        first.duration_s,
        s.warmup_s,
        sides.iter().map(|s| s.runs.len()).max().unwrap_or(1)
    );
    let series = |f: &dyn Fn(&Side) -> Vec<(f64, f64)>| -> Vec<Series> {
        sides
            .iter()
            .enumerate()
            .map(|(i, s)| Series {
                name: s.name.to_string(),
                color: charts::color(i, s.name),
                points: f(s),
            })
            .collect()
    };
    o.push_str("<div class=\"charts\">\n");
    let pct = series(&|s| charts::percentile_points(&s.merged));
    let svg = charts::line_chart("latency by percentile", "percentile", "ms", &pct, true);
    o.push_str(&figure("percentiles", &svg, &pct));
    // Each point is a whole second; the last, partial one (requests in flight at the end) is left out.
    let first_run = |s: &Side| {
        s.runs
            .first()
            .map(|r| {
                let end = r.duration_s + 0.5;
                r.time_series
                    .iter()
                    .filter(|p| p.t_s <= end)
                    .copied()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let rps = series(&|s| first_run(s).iter().map(|p| (p.t_s, p.rps)).collect());
    let svg = charts::line_chart("requests per second", "seconds", "rps", &rps, false);
    o.push_str(&figure("rate", &svg, &rps));
    let p99 = series(&|s| first_run(s).iter().map(|p| (p.t_s, p.p99_us as f64 / 1000.0)).collect());
    let svg = charts::line_chart("p99 per second", "seconds", "ms", &p99, false);
    o.push_str(&figure("p99", &svg, &p99));
    o.push_str(&added_table(&sides));
    o.push_str("</div>\n");
    o.push_str(&thresholds(&sides));
    for run in sides.iter().flat_map(|s| &s.runs) {
        if let Some(d) = &run.distribution {
            o.push_str(&workers(d));
        }
    }
    o.push_str("</article>\n");
    o
}

/// A distributed run's workers: one row each, and whether the merged figures cover the run.
fn workers(d: &crate::model::Distribution) -> String {
    let verdict = if d.complete {
        "<span class=\"pass\">complete</span>".to_string()
    } else {
        format!(
            "<span class=\"fail\">INCOMPLETE</span>: {}",
            esc(&d.problems.join("; "))
        )
    };
    let mut o = format!(
        "<p>Merged from {} workers started together at {}: {verdict}</p>\n<table class=\"workers\"><thead><tr><th>worker</th>\
         <th>state</th><th>host</th><th>requests</th><th>rps</th><th>p99</th><th>start lag</th><th>busiest thread</th><th></th></tr></thead><tbody>\n",
        d.workers_total,
        esc(&d.start_at)
    );
    for w in &d.workers {
        let state = format!("{:?}", w.state).to_lowercase();
        let class = if w.state == crate::model::WorkerState::Ok {
            "pass"
        } else {
            "fail"
        };
        o.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td class=\"{class}\">{state}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{:.0} ms</td><td class=\"num\">{:.0}%</td><td>{}</td></tr>\n",
            w.index,
            esc(&w.host),
            w.requests,
            w.rps,
            crate::text::us(w.p99_us),
            w.start_lag_ms,
            w.max_busy * 100.0,
            esc(w.message.as_deref().unwrap_or(""))
        ));
    }
    o.push_str("</tbody></table>\n");
    o
}

/// Every threshold check of the scenario, failures first.
fn thresholds(sides: &[Side]) -> String {
    let mut rows: Vec<(bool, String)> = sides
        .iter()
        .flat_map(|s| s.runs.iter().flat_map(move |r| r.thresholds.iter().map(move |t| (s.name, r.repetition, t))))
        .map(|(name, rep, t)| {
            let class = if t.passed { "pass" } else { "fail" };
            let row = format!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                esc(name),
                rep + 1,
                esc(&t.expression),
                if t.passed { "ok" } else { "FAILED" },
                esc(&t.observed)
            );
            (t.passed, row)
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    rows.sort_by_key(|(passed, _)| *passed);
    let mut o = String::from("<table class=\"thresholds\"><thead><tr><th>target</th><th>repetition</th><th>threshold</th><th></th><th>observed</th></tr></thead><tbody>\n");
    for (_, row) in rows {
        o.push_str(&row);
        o.push('\n');
    }
    o.push_str("</tbody></table>\n");
    o
}

/// Each side's figures, and what it adds over the direct baseline.
fn added_table(sides: &[Side]) -> String {
    let base = sides.iter().find(|s| s.name == "direct");
    let mut o = String::from(
        "<table class=\"added\"><thead><tr><th>target</th><th>rps (asked)</th><th>p50</th><th>p90</th><th>p99</th>\
         <th>added p50</th><th>added p90</th><th>added p99</th><th>errors</th><th>CPU-ms / 1k req</th><th>peak RSS</th></tr></thead><tbody>\n",
    );
    for s in sides {
        let added = |q: f64| match base.filter(|b| b.name != s.name) {
            Some(b) => {
                let d = s.p(q) as i64 - b.p(q) as i64;
                let sign = if d < 0 { "-" } else { "+" };
                format!("{sign}{}", us(d.unsigned_abs()))
            }
            None => "".into(),
        };
        let asked = s
            .runs
            .first()
            .and_then(|r| r.asked_rps)
            .map(|a| format!(" ({a:.0})"))
            .unwrap_or_default();
        let errors: u64 = s.runs.iter().map(|r| r.errors).sum();
        let cpu = s
            .runs
            .iter()
            .filter_map(|r| r.gateway)
            .map(|g| g.cpu_s_per_1k_requests * 1000.0);
        let cpu: Vec<f64> = cpu.collect();
        let cpu = if cpu.is_empty() {
            String::new()
        } else {
            format!("{:.1}", cpu.iter().sum::<f64>() / cpu.len() as f64)
        };
        let rss = s
            .runs
            .iter()
            .filter_map(|r| r.gateway)
            .map(|g| g.peak_rss_bytes)
            .max()
            .map(mib)
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td class=\"num\">{:.0}{asked}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{errors}</td><td class=\"num\">{cpu}</td><td class=\"num\">{rss}</td></tr>",
            esc(s.name),
            s.mean(|r| r.rps),
            us(s.p(0.5)),
            us(s.p(0.9)),
            us(s.p(0.99)),
            added(0.5),
            added(0.9),
            added(0.99),
        );
    }
    o.push_str("</tbody></table>\n");
    o
}
