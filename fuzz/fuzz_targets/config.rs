//! Any text as a config: the YAML loader, decoding, validation and analysis, the Plan of an
//! ingress gateway and of a sidecar, and the Envoy bootstrap of the gateway's Plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_model::plan::PlanOptions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loaded = mesh_model::load_str("fuzz.yaml", text);
    let _ = mesh_model::validate::validate(&loaded.config);
    let labels = [("istio".to_string(), "ingressgateway".to_string())].into_iter().collect();
    let gateway = PlanOptions { labels: Some(labels), ..Default::default() };
    let (plan, _) = mesh_model::plan::build(&loaded.config, &gateway);
    let _ = mesh_model::envoy::bootstrap(&plan, &Default::default());
    let sidecar = PlanOptions { sidecar: true, ..Default::default() };
    let _ = mesh_model::plan::build(&loaded.config, &sidecar);
});
