//! `meshbench merge a.hlog b.hlog …`: adds interval logs from several workers or machines into
//! one exact result (histograms add without loss), and with `--out` writes them as one interval
//! log on one time axis (each input placed at its own StartTime).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use meshbench_report::text::us;

use super::{exit, Output};
use crate::load::hlog;
use crate::load::stats::{ladder, percentiles};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interval logs written by `meshbench load --hlog` (or any HdrHistogram log writer).
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Also write the merged intervals here: one line per tag and second since the earliest
    /// input's StartTime, with that StartTime.
    #[arg(long = "out", short = 'O')]
    pub out: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

/// The merged log's text.
pub fn merged_log(logs: &[hlog::Log]) -> String {
    let (origin, timeline) = hlog::timeline(logs);
    let start = UNIX_EPOCH + Duration::from_secs_f64(origin.max(0.0));
    let comment = format!(
        "Merged by meshbench {} from {} logs; values in microseconds",
        env!("CARGO_PKG_VERSION"),
        logs.len()
    );
    let mut text = hlog::header(&comment, start);
    // In time order; the untagged (corrected) line of a second first.
    let mut lines: Vec<(&(String, u64), &hdrhistogram::Histogram<u64>)> = timeline.iter().collect();
    lines.sort_by_key(|((tag, second), _)| (*second, tag.clone()));
    for ((tag, second), h) in lines {
        text.push_str(&hlog::line(Some(tag), *second as f64, 1.0, h));
    }
    text
}

pub fn run(args: &Args) -> u8 {
    let mut logs = Vec::new();
    for path in &args.logs {
        match hlog::read(path) {
            Ok(l) => logs.push(l),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::IO;
            }
        }
    }
    let (_, timeline) = hlog::timeline(&logs);
    let span = timeline.keys().map(|(_, s)| s + 1).max().unwrap_or(0);
    let merged = hlog::merge(&logs);
    if let Some(out) = &args.out {
        if let Err(e) = std::fs::write(out, merged_log(&logs)) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return exit::IO;
        }
    }
    let name = |tag: &str| {
        if tag.is_empty() {
            "corrected".to_string()
        } else {
            tag.to_string()
        }
    };
    match args.output {
        Output::Json | Output::Yaml => {
            let v: serde_json::Map<String, serde_json::Value> = merged
                .iter()
                .map(|(tag, h)| {
                    let body = serde_json::json!({
                        "count": h.len(),
                        "latency_us": percentiles(h),
                        "ladder_us": ladder(h),
                    });
                    (name(tag), body)
                })
                .collect();
            let v = serde_json::Value::Object(v);
            if args.output == Output::Yaml {
                print!("{}", mesh_model::load::to_yaml_string(&v));
            } else {
                println!("{v}");
            }
        }
        Output::Text => {
            println!("merged {} logs, {span}s", args.logs.len());
            for (tag, h) in &merged {
                let p = percentiles(h);
                println!(
                    "  {}: {} requests  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    name(tag),
                    h.len(),
                    us(p.p50),
                    us(p.p90),
                    us(p.p99),
                    us(p.p999),
                    us(p.max)
                );
            }
        }
    }
    exit::OK
}
