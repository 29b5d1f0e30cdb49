//! Run metadata for reports: version, git revision, host, cores, start time, command line.

use std::time::{SystemTime, UNIX_EPOCH};

use meshbench_report::RunMeta;

pub fn run_meta() -> RunMeta {
    RunMeta {
        tool: "meshbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: option_env!("MESHBENCH_GIT_REVISION")
            .filter(|s| !s.is_empty())
            .map(String::from),
        host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        started_at: rfc3339(SystemTime::now()),
        command: std::env::args().collect(),
    }
}

/// `2026-11-27T09:00:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_770_000)),
            "2026-11-27T09:00:00Z"
        );
    }
}
