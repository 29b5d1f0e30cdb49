//! `external`: a gateway someone else configured, reached at given addresses (`--address
//! 80=10.0.0.5:80`); `--print-config` says what to apply to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meshbench_report::TargetInfo;

use super::{StartSpec, Target, TargetError};

#[derive(Debug)]
pub struct External {
    pub name: String,
    pub addresses: BTreeMap<u32, SocketAddr>,
}

impl External {
    pub fn new(addresses: BTreeMap<u32, SocketAddr>) -> External {
        External {
            name: "external".into(),
            addresses,
        }
    }
}

#[async_trait::async_trait]
impl Target for External {
    fn info(&self) -> TargetInfo {
        let addrs: Vec<String> = self.addresses.iter().map(|(p, a)| format!("{p}={a}")).collect();
        TargetInfo {
            name: self.name.clone(),
            kind: "external".into(),
            address: (!addrs.is_empty()).then(|| addrs.join(",")),
            version: None,
        }
    }

    async fn start(&mut self, spec: &StartSpec<'_>) -> Result<BTreeMap<u32, SocketAddr>, TargetError> {
        match spec.ports.iter().find(|p| !self.addresses.contains_key(p)) {
            Some(p) => Err(TargetError::Failed(format!(
                "port {p} has no address: add --address {p}=HOST:PORT"
            ))),
            None => Ok(self.addresses.clone()),
        }
    }

    /// Extra gateways are reached at the same `--address` map.
    fn another(&self) -> Result<Box<dyn Target>, TargetError> {
        Ok(Box::new(External {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
        }))
    }

    async fn stop(&mut self) {}

    fn rename(&mut self, name: &str) {
        self.name = name.into();
    }

    fn logs(&self) -> String {
        String::new()
    }
}
