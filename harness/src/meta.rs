//! Run metadata for reports: version, git revision, host, cores, start time, command line, and
//! what the machine is (CPU model, kernel), which the gate compares.

use std::time::SystemTime;

use meshbench_report::{Machine, RunMeta};

pub fn run_meta() -> RunMeta {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let uname = rustix::system::uname();
    RunMeta {
        tool: "meshbench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: option_env!("MESHBENCH_GIT_REVISION")
            .filter(|s| !s.is_empty())
            .map(String::from),
        host: uname.nodename().to_string_lossy().into_owned(),
        cores,
        started_at: mesh_model::time::rfc3339(SystemTime::now(), false),
        command: std::env::args().collect(),
        machine: Some(Machine {
            cpu_model: cpu_model(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
            cores,
            kernel: uname.release().to_string_lossy().into_owned(),
        }),
    }
}

/// The first `model name` of /proc/cpuinfo (empty when there is none).
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(super::cpu_model(info), "AMD EPYC 7B13");
        assert_eq!(super::cpu_model("processor: 0\n"), "");
    }
}
