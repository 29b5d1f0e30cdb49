use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::conform::suite::Role;

#[test]
fn images_split_at_the_tag_not_at_a_registry_port() {
    assert_eq!(
        split_image("istio/pilot:1.30.0"),
        ("istio/pilot".into(), "1.30.0".into())
    );
    assert_eq!(
        split_image("reg.local:5000/istio/proxyv2:1.30.1"),
        ("reg.local:5000/istio/proxyv2".into(), "1.30.1".into())
    );
    assert_eq!(
        split_image("reg.local:5000/istio/proxyv2"),
        ("reg.local:5000/istio/proxyv2".into(), "latest".into())
    );
    assert_eq!(split_image("pilot"), ("pilot".into(), "latest".into()));
}

#[test]
fn missing_images_are_named_in_one_line_with_how_to_load_them() {
    assert_eq!(missing_reason(&[]), None);
    let both = missing_reason(&[DEFAULT_PILOT_IMAGE, DEFAULT_PROXY_IMAGE]).unwrap_or_default();
    assert_eq!(
        both,
        "Istio's images istio/pilot:1.30.0 and istio/proxyv2:1.30.0 are not loaded here and cannot be pulled: \
         save them on a machine that has them (docker save -o …), then `docker load -i pilot.tar && docker load -i proxyv2.tar`"
    );
    let one = missing_reason(&["reg:5000/istio/proxyv2:1.30.0"]).unwrap_or_default();
    assert!(
        one.starts_with("Istio's image reg:5000/istio/proxyv2:1.30.0 is not loaded"),
        "{one}"
    );
    assert!(one.ends_with("`docker load -i proxyv2.tar`"), "{one}");
    assert!(!both.contains('\n') && !one.contains('\n'));
}

#[test]
fn without_its_images_the_target_is_unavailable_not_failed() {
    let images = IstioImages {
        pilot: "meshbench-test-absent/pilot:0".into(),
        proxy: "meshbench-test-absent/proxyv2:0".into(),
    };
    match Istio::new(images) {
        Err(TargetError::Unavailable(why)) => {
            assert!(
                why.contains("meshbench-test-absent/pilot:0 and meshbench-test-absent/proxyv2:0"),
                "{why}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn the_mesh_config_points_at_istiod_and_keeps_the_suites_policy() {
    let suite: serde_json::Value = serde_json::json!({
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "defaultConfig": {"discoveryAddress": "elsewhere:1"},
    });
    let mesh = mesh_config("127.0.0.1:4100", Some(&suite));
    assert_eq!(mesh["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
    assert_eq!(mesh["defaultConfig"]["discoveryAddress"], "127.0.0.1:4100", "ours wins");
    assert_eq!(mesh["defaultConfig"]["controlPlaneAuthPolicy"], "NONE");
    assert_eq!(mesh["configSources"][0]["address"], "fs:///var/lib/istio/config/data");
    assert_eq!(mesh["enableAutoMtls"], false);
    assert!(mesh_config("x:1", None).get("outboundTrafficPolicy").is_none());
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshbench-istio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn labels() -> BTreeMap<String, String> {
    [("istio".to_string(), "ingressgateway".to_string())].into()
}

fn spec<'a>(config: &'a Path, mesh: Option<&'a Path>, labels: &'a BTreeMap<String, String>) -> StartSpec<'a> {
    StartSpec {
        config_dir: config,
        mesh,
        labels,
        ports: &[80, 443],
        role: Role::Gateway,
        network: None,
        host: None,
        capture: false,
    }
}

#[test]
fn the_file_registry_holds_the_suites_yaml_and_the_mesh_file() {
    let work = scratch("layout");
    let config = work.join("http-routing");
    std::fs::create_dir_all(&config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(config.join("config.yaml"), "kind: Gateway\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(config.join("registry.yml"), "kind: ServiceEntry\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(config.join("notes.txt"), "not config").unwrap_or_else(|e| panic!("{e}"));
    let mesh = work.join("mesh.yaml");
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n").unwrap_or_else(|e| panic!("{e}"));
    let l = labels();
    let layout = write_layout(
        &spec(&config, Some(&mesh), &l),
        &work.join("http-routing.istio"),
        "127.0.0.1:4100",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        layout.files,
        vec!["config.yaml".to_string(), "registry.yml".to_string()]
    );
    let data = layout.root.join("data");
    assert_eq!(
        std::fs::read_to_string(data.join("registry.yml")).ok().as_deref(),
        Some("kind: ServiceEntry\n")
    );
    assert!(!data.join("notes.txt").exists());
    let written = std::fs::read_to_string(layout.root.join("mesh")).unwrap_or_default();
    assert_eq!(written, layout.mesh);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/istio-mesh.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &written).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        written,
        std::fs::read_to_string(&golden).unwrap_or_default(),
        "UPDATE_GOLDEN=1 rewrites it"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_containers_it_would_start_match_their_golden_file() {
    let l = labels();
    let config = Path::new("/tmp/meshbench-run/http-routing");
    let s = spec(config, None, &l);
    let layout = Layout {
        root: PathBuf::from("/tmp/meshbench-run/http-routing.istio"),
        mesh: String::new(),
        files: Vec::new(),
    };
    let ports = IstiodPorts {
        grpc: 41010,
        http: 41080,
        monitoring: 41014,
        https: 41017,
        secure_grpc: 41012,
    };
    let images = IstioImages::default();
    let both = serde_json::json!({
        "istiod": istiod_spec(&images, &layout, ports, "istio"),
        "gateway": gateway_spec(&images, &layout, &s, "istio"),
    });
    let text = mesh_model::load::to_yaml_string(&both);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/istio-containers.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        text,
        std::fs::read_to_string(&golden).unwrap_or_default(),
        "UPDATE_GOLDEN=1 rewrites it"
    );
}
