//! `meshbench merge a.hlog b.hlog …`: adds interval logs from several workers or machines into
//! one exact result (histograms add without loss).

use std::path::PathBuf;

use meshbench_report::text::us;

use super::{exit, Output};
use crate::load::hlog;
use crate::load::stats::{encode, ladder, percentiles};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interval logs written by `meshbench load --hlog`.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Also write the merged histograms as a one-interval log.
    #[arg(long = "out", short = 'O')]
    pub out: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
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
    let span = logs
        .iter()
        .flatten()
        .map(|i| i.start_s + i.length_s)
        .fold(0.0, f64::max);
    let merged = hlog::merge(&logs);
    if let Some(out) = &args.out {
        let mut text =
            String::from("#[Merged by meshbench; values in microseconds]\n#[Histogram log format version 1.3]\n");
        text.push_str("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n");
        for (tag, h) in &merged {
            let prefix = if tag.is_empty() {
                String::new()
            } else {
                format!("Tag={tag},")
            };
            text.push_str(&format!(
                "{prefix}0.000,{span:.3},{:.3},{}\n",
                h.max() as f64,
                encode(h)
            ));
        }
        if let Err(e) = std::fs::write(out, text) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return exit::IO;
        }
    }
    match args.output {
        Output::Json => {
            let v: serde_json::Map<String, serde_json::Value> = merged
                .iter()
                .map(|(tag, h)| {
                    let name = if tag.is_empty() {
                        "corrected".to_string()
                    } else {
                        tag.clone()
                    };
                    let body = serde_json::json!({
                        "count": h.len(),
                        "latency_us": percentiles(h),
                        "ladder_us": ladder(h),
                    });
                    (name, body)
                })
                .collect();
            println!("{}", serde_json::Value::Object(v));
        }
        Output::Text | Output::Yaml => {
            println!("merged {} logs, {:.0}s", args.logs.len(), span);
            for (tag, h) in &merged {
                let name = if tag.is_empty() { "corrected" } else { tag };
                let p = percentiles(h);
                println!(
                    "  {name}: {} requests  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
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
