//! HdrHistogram interval logs (`.hlog`) as the Java and Python writers write them: `StartTime`
//! (with its date text) and `BaseTime` comments, then one line per interval with its start
//! (seconds after BaseTime), length, maximum (divided by the max-value unit ratio, 1e6, so
//! microseconds read as seconds) and the V2 compressed histogram. Corrected latency is untagged;
//! uncorrected (open loop) carries `Tag=uncorrected`. Values are microseconds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::Histogram;

use super::stats::{encode, IntervalStats};

pub const UNCORRECTED_TAG: &str = "uncorrected";

/// What HdrHistogram's writers divide `Interval_Max` by (`maxValueUnitRatio`).
pub const MAX_VALUE_UNIT_RATIO: f64 = 1e6;

/// The comment and legend lines every log starts with.
pub fn header(comment: &str, start: SystemTime) -> String {
    let secs = start.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    format!(
        "#[{comment}]\n#[Histogram log format version 1.3]\n\
         #[StartTime: {secs:.3} (seconds since epoch), {}]\n#[BaseTime: {secs:.3} (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        mesh_model::time::java_date(start)
    )
}

/// One interval line: start and length in seconds, the maximum scaled as the Java writer does.
pub fn line(tag: Option<&str>, start_s: f64, length_s: f64, h: &Histogram<u64>) -> String {
    let prefix = tag
        .filter(|t| !t.is_empty())
        .map(|t| format!("Tag={t},"))
        .unwrap_or_default();
    format!(
        "{prefix}{start_s:.3},{length_s:.3},{:.3},{}\n",
        h.max() as f64 / MAX_VALUE_UNIT_RATIO,
        encode(h)
    )
}

/// Writes one line per interval as it is finished (nothing is kept in memory).
#[derive(Debug)]
pub struct Writer {
    out: Option<std::io::BufWriter<std::fs::File>>,
    open_loop: bool,
}

impl Writer {
    /// `path` None: a writer that writes nothing. `start`: when interval 0 began.
    pub fn create(path: Option<&Path>, start: SystemTime, open_loop: bool) -> Result<Writer, String> {
        let Some(path) = path else {
            return Ok(Writer { out: None, open_loop });
        };
        let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let comment = format!(
            "Logged with meshbench {}; values in microseconds",
            env!("CARGO_PKG_VERSION")
        );
        out.write_all(header(&comment, start).as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Writer {
            out: Some(out),
            open_loop,
        })
    }

    /// Interval `seq`: the `seq`-th second after the warm-up.
    pub fn write(&mut self, seq: u64, s: &IntervalStats) -> Result<(), String> {
        let Some(out) = &mut self.out else { return Ok(()) };
        let start = seq as f64;
        let mut text = line(None, start, 1.0, &s.corrected);
        if self.open_loop {
            text.push_str(&line(Some(UNCORRECTED_TAG), start, 1.0, &s.uncorrected));
        }
        out.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the interval log: {e}"))
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
    /// Seconds after the log's BaseTime (or StartTime).
    pub start_s: f64,
    pub length_s: f64,
    pub histogram: Histogram<u64>,
}

/// A log read back: when it started (seconds since the epoch, if it says) and its intervals.
#[derive(Debug, Clone)]
pub struct Log {
    pub start_time: Option<f64>,
    pub intervals: Vec<Interval>,
}

/// Reads every interval of a log.
pub fn read(path: &Path) -> Result<Log, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &bytes)
}

/// Every interval of a log's bytes; `name` says where they came from in errors.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Log, String> {
    let mut log = Log {
        start_time: None,
        intervals: Vec::new(),
    };
    let mut base_time = None;
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| format!("{name}: not an interval log ({e:?})"))?;
        match entry {
            LogEntry::StartTime(t) => log.start_time = Some(t.as_secs_f64()),
            LogEntry::BaseTime(t) => base_time = Some(t.as_secs_f64()),
            LogEntry::Interval(i) => {
                let histogram = super::stats::decode(i.encoded_histogram()).map_err(|e| format!("{name}: {e}"))?;
                log.intervals.push(Interval {
                    tag: i.tag().map(|t| t.as_str().to_string()),
                    start_s: i.start_timestamp().as_secs_f64(),
                    length_s: i.duration().as_secs_f64(),
                    histogram,
                });
            }
        }
    }
    // Interval starts are relative to BaseTime; keep StartTime for the time axis, else BaseTime.
    log.start_time = log.start_time.or(base_time);
    Ok(log)
}

/// Adds every interval of every log, per tag (untagged is `""`): the exact merged histograms.
pub fn merge(logs: &[Log]) -> BTreeMap<String, Histogram<u64>> {
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for i in logs.iter().flat_map(|l| &l.intervals) {
        add(
            out.entry(i.tag.clone().unwrap_or_default())
                .or_insert_with(super::stats::histogram),
            &i.histogram,
        );
    }
    out
}

fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) {
    // Histograms read back may have other bounds; adding auto-resizes when needed.
    into.auto(true);
    let _ = into.add(h);
}

/// The logs on one time axis: every interval placed at its log's StartTime plus its start, then
/// added per tag and whole second since the earliest StartTime. Returns that StartTime and, per
/// (tag, second), the sum of the intervals that began in it.
pub fn timeline(logs: &[Log]) -> (f64, BTreeMap<(String, u64), Histogram<u64>>) {
    let origin = logs.iter().filter_map(|l| l.start_time).fold(f64::INFINITY, f64::min);
    let origin = if origin.is_finite() { origin } else { 0.0 };
    let mut out: BTreeMap<(String, u64), Histogram<u64>> = BTreeMap::new();
    for log in logs {
        let offset = log.start_time.map_or(0.0, |s| s - origin);
        for i in &log.intervals {
            let second = (offset + i.start_s).max(0.0).floor() as u64;
            let key = (i.tag.clone().unwrap_or_default(), second);
            add(out.entry(key).or_insert_with(super::stats::histogram), &i.histogram);
        }
    }
    (origin, out)
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
        assert_eq!(logs[0].intervals.len(), 6, "3 intervals x (corrected, uncorrected)");
        assert_eq!(logs[0].intervals[2].start_s, 1.0);
        assert_eq!(logs[0].intervals[1].tag.as_deref(), Some(UNCORRECTED_TAG));
        assert!(logs[0].start_time.is_some_and(|t| t > 1.7e9));
        let merged = merge(&logs);
        assert_eq!(merged[""], all.corrected);
        assert_eq!(merged[UNCORRECTED_TAG], all.uncorrected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn headers_and_lines_are_what_the_java_writer_writes() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_770_000_042);
        assert_eq!(
            header("Logged with x", t),
            "#[Logged with x]\n#[Histogram log format version 1.3]\n\
             #[StartTime: 1795770000.042 (seconds since epoch), Fri Nov 27 09:00:00 UTC 2026]\n\
             #[BaseTime: 1795770000.042 (seconds since epoch)]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
        );
        let s = interval(&[1500, 250_000]);
        let l = line(Some(UNCORRECTED_TAG), 3.0, 1.0, &s.corrected);
        // 250 ms as seconds (the histogram's equivalent value), three decimals.
        assert!(l.starts_with("Tag=uncorrected,3.000,1.000,0.250,HIST"), "{l}");
        assert!(line(None, 0.0, 1.0, &s.corrected).starts_with("0.000,1.000,0.250,"));
    }

    #[test]
    fn a_timeline_keeps_each_log_at_its_start_time() {
        let at = |start: f64, values: &[u64]| Log {
            start_time: Some(start),
            intervals: (0..2)
                .map(|k| Interval {
                    tag: None,
                    start_s: k as f64,
                    length_s: 1.0,
                    histogram: interval(values).corrected,
                })
                .collect(),
        };
        // Worker b started 1.5 s after worker a: its intervals land in seconds 1 and 2.
        let (origin, t) = timeline(&[at(100.0, &[10]), at(101.5, &[20, 30])]);
        assert_eq!(origin, 100.0);
        let counts: Vec<(u64, u64)> = t.iter().map(|((_, s), h)| (*s, h.len())).collect();
        assert_eq!(counts, [(0, 1), (1, 3), (2, 2)]);
        let total: u64 = t.values().map(Histogram::len).sum();
        assert_eq!(total, 6, "nothing lost");
    }
}
