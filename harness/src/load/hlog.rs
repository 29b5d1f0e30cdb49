//! HdrHistogram interval logs (`.hlog`), the format HdrHistogram's own tools read: one line per
//! interval with its start, length, max and the V2 compressed histogram. Corrected latency is
//! untagged; uncorrected (open loop) carries `Tag=uncorrected`. Values are microseconds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::Histogram;

use super::stats::{encode, IntervalStats};

pub const UNCORRECTED_TAG: &str = "uncorrected";

/// Writes one line per interval as it is finished (nothing is kept in memory).
#[derive(Debug)]
pub struct Writer {
    out: Option<std::io::BufWriter<std::fs::File>>,
    open_loop: bool,
}

impl Writer {
    /// `path` None: a writer that writes nothing.
    pub fn create(path: Option<&Path>, start: SystemTime, open_loop: bool) -> Result<Writer, String> {
        let Some(path) = path else {
            return Ok(Writer { out: None, open_loop });
        };
        let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let secs = start.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let header = format!(
            "#[Logged with meshbench {}; values in microseconds]\n#[Histogram log format version 1.3]\n\
             #[StartTime: {secs:.3} (seconds since epoch)]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
            env!("CARGO_PKG_VERSION")
        );
        out.write_all(header.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Writer {
            out: Some(out),
            open_loop,
        })
    }

    /// Interval `seq`: the `seq`-th second after the warm-up.
    pub fn write(&mut self, seq: u64, s: &IntervalStats) -> Result<(), String> {
        let Some(out) = &mut self.out else { return Ok(()) };
        let mut line = |tag: Option<&str>, h: &Histogram<u64>| {
            let prefix = tag.map(|t| format!("Tag={t},")).unwrap_or_default();
            writeln!(out, "{prefix}{seq}.000,1.000,{:.3},{}", h.max() as f64, encode(h))
        };
        line(None, &s.corrected).map_err(|e| format!("cannot write the interval log: {e}"))?;
        if self.open_loop {
            line(Some(UNCORRECTED_TAG), &s.uncorrected).map_err(|e| format!("cannot write the interval log: {e}"))?;
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), String> {
        match &mut self.out {
            Some(out) => out.flush().map_err(|e| format!("cannot write the interval log: {e}")),
            None => Ok(()),
        }
    }
}

/// One interval read back.
#[derive(Debug, Clone)]
pub struct Interval {
    pub tag: Option<String>,
    pub start_s: f64,
    pub length_s: f64,
    pub histogram: Histogram<u64>,
}

/// Reads every interval of a log.
pub fn read(path: &Path) -> Result<Vec<Interval>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| format!("{}: not an interval log ({e:?})", path.display()))?;
        if let LogEntry::Interval(i) = entry {
            let histogram =
                super::stats::decode(i.encoded_histogram()).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(Interval {
                tag: i.tag().map(|t| t.as_str().to_string()),
                start_s: i.start_timestamp().as_secs_f64(),
                length_s: i.duration().as_secs_f64(),
                histogram,
            });
        }
    }
    Ok(out)
}

/// Adds every interval of every log, per tag (untagged is `""`): the exact merged histograms.
pub fn merge(logs: &[Vec<Interval>]) -> BTreeMap<String, Histogram<u64>> {
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for i in logs.iter().flatten() {
        let h = out
            .entry(i.tag.clone().unwrap_or_default())
            .or_insert_with(super::stats::histogram);
        // Histograms read back may have other bounds; adding auto-resizes when needed.
        h.auto(true);
        let _ = h.add(&i.histogram);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(values: &[u64]) -> IntervalStats {
        let mut s = IntervalStats::default();
        for v in values {
            s.response("200", *v, v / 2, false, None);
        }
        s
    }

    #[test]
    fn logs_round_trip_and_merge_exactly() {
        let dir = std::env::temp_dir().join(format!("meshbench-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b) = (dir.join("a.hlog"), dir.join("b.hlog"));
        let mut all = IntervalStats::default();
        for (path, base) in [(&a, 100), (&b, 10_000)] {
            let mut w = Writer::create(Some(path), SystemTime::now(), true).expect("create");
            for seq in 0..3 {
                let s = interval(&[base + seq, base * 2 + seq, base * 3]);
                all.add(&s);
                w.write(seq, &s).expect("write");
            }
            w.finish().expect("finish");
        }
        let logs = [read(&a).expect("read a"), read(&b).expect("read b")];
        assert_eq!(logs[0].len(), 6, "3 intervals x (corrected, uncorrected)");
        assert_eq!(logs[0][2].start_s, 1.0);
        assert_eq!(logs[0][1].tag.as_deref(), Some(UNCORRECTED_TAG));
        let merged = merge(&logs);
        assert_eq!(merged[""], all.corrected);
        assert_eq!(merged[UNCORRECTED_TAG], all.uncorrected);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
