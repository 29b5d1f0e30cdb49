//! Run metadata for reports: version, git revision, host, cores, start time, command line.

use std::time::SystemTime;

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
        started_at: mesh_model::time::rfc3339(SystemTime::now(), false),
        command: std::env::args().collect(),
    }
}
