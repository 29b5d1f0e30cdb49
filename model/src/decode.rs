//! YAML documents -> typed resources. Reports every schema problem of a document at once
//! (unknown fields with "did you mean", wrong types, unknown enum values), not only the first.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::kube::{self, KubeMeta, KubeObject, KubeSpec};
use crate::api::{self, Kind, MeshConfig, ObjectMeta, Resource, Source, Spec};
use crate::diag::{did_you_mean, Code, Diagnostic, ResourceRef, Severity};
use crate::load::{Document, Node};

/// A schema problem at a field path, before it is tied to a file and line.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem {
    /// Error for a real problem; Info for something read with a note (a snake_case field name).
    pub severity: Severity,
    pub path: String,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

/// At most this many problems per document; past it the document is hopeless anyway.
const MAX_PROBLEMS: usize = 64;

/// Decodes `value` into `T`, collecting every problem: the node at a failing path is dropped
/// (its field takes its default) and decoding goes on, so all problems are found in one pass.
pub fn decode_lenient<T: DeserializeOwned + Default>(mut value: Value, prefix: &str) -> (T, Vec<FieldProblem>) {
    let mut problems = Vec::new();
    let mut last_path: Option<Vec<PathStep>> = None;
    while problems.len() < MAX_PROBLEMS {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return (t, problems),
            Err(e) => e,
        };
        let steps: Vec<PathStep> = err.path().iter().filter_map(PathStep::from_segment).collect();
        if let Some(note) = snake_case_field(&mut value, &steps, &err.inner().to_string(), prefix) {
            problems.push(note);
            continue;
        }
        let repeated = last_path.as_ref() == Some(&steps);
        if !repeated {
            problems.push(describe(
                &join_path(prefix, &err.path().to_string()),
                &err.inner().to_string(),
            ));
        }
        if steps.is_empty() || !remove_at(&mut value, &steps, repeated) {
            break;
        }
        last_path = Some(steps);
    }
    (T::default(), problems)
}

#[derive(Debug, Clone, PartialEq)]
enum PathStep {
    Key(String),
    Index(usize),
}

impl PathStep {
    fn from_segment(s: &serde_path_to_error::Segment) -> Option<PathStep> {
        match s {
            serde_path_to_error::Segment::Map { key } => Some(PathStep::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(PathStep::Index(*index)),
            _ => None,
        }
    }
}

/// `proto_field_name` as its JSON name (`protoFieldName`).
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// Istio reads YAML with protobuf's JSON decoder, which takes a field's proto name
/// (`max_retries`) as well as its JSON name (`maxRetries`). When serde rejects an unknown
/// snake_case field whose camelCase form is expected there, the key is renamed in `value` and a
/// note says so; decoding then goes on.
fn snake_case_field(value: &mut Value, steps: &[PathStep], msg: &str, prefix: &str) -> Option<FieldProblem> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let camel = lower_camel(field);
    if !field.contains('_') || !expected.contains(&format!("`{camel}`")) {
        return None;
    }
    let mut node = &mut *value;
    for step in steps.iter().take(steps.len().saturating_sub(1)) {
        node = match (node, step) {
            (Value::Object(m), PathStep::Key(k)) => m.get_mut(k)?,
            (Value::Array(a), PathStep::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    let map = node.as_object_mut()?;
    if map.contains_key(&camel) {
        return None;
    }
    let v = map.remove(field)?;
    map.insert(camel.clone(), v);
    let mut path = String::new();
    for step in &steps[..steps.len().saturating_sub(1)] {
        match step {
            PathStep::Key(k) if path.is_empty() => path.push_str(k),
            PathStep::Key(k) => path.push_str(&format!(".{k}")),
            PathStep::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    let path = join_path(prefix, &join_path(&path, field));
    Some(FieldProblem {
        severity: Severity::Info,
        path,
        code: Code::UnknownField,
        message: format!("`{field}` read as `{camel}`, as Istio's protobuf decoder reads proto field names"),
        hint: Some(format!("write `{camel}`: the CRD's schema names the field that way")),
    })
}

/// Drops the node at `steps`. An array element is first emptied (`{}`), and removed when that
/// did not help (`hard`), so later indexes stay right in the common case.
fn remove_at(value: &mut Value, steps: &[PathStep], hard: bool) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parents {
        node = match (node, step) {
            (Value::Object(m), PathStep::Key(k)) => match m.get_mut(k) {
                Some(n) => n,
                None => return false,
            },
            (Value::Array(a), PathStep::Index(i)) => match a.get_mut(*i) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (node, last) {
        (Value::Object(m), PathStep::Key(k)) => m.remove(k).is_some(),
        (Value::Array(a), PathStep::Index(i)) if *i < a.len() => {
            if hard {
                a.remove(*i);
            } else {
                a[*i] = Value::Object(Default::default());
            }
            true
        }
        _ => false,
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => path.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Turns a serde message into a problem with a code and a hint.
fn describe(path: &str, msg: &str) -> FieldProblem {
    let quoted: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    let expected: Vec<&str> = quoted.iter().skip(1).copied().collect();
    let (code, message, hint) = if let Some(rest) = msg.strip_prefix("unknown field ") {
        let field = quoted.first().copied().unwrap_or(rest);
        let hint = match did_you_mean(field, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? Fields allowed here: {}", expected.join(", ")),
            None if expected.is_empty() => "this object has no fields; remove it".to_string(),
            None => format!("remove it; fields allowed here: {}", expected.join(", ")),
        };
        (Code::UnknownField, format!("unknown field `{field}`"), hint)
    } else if msg.starts_with("unknown variant ") {
        let value = quoted.first().copied().unwrap_or("");
        let hint = match did_you_mean(value, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? Valid values: {}", expected.join(", ")),
            None => format!("valid values: {}", expected.join(", ")),
        };
        (Code::UnknownEnumValue, format!("`{value}` is not a valid value"), hint)
    } else if msg.contains("duration") || msg.contains("unit") {
        (
            Code::InvalidDuration,
            msg.to_string(),
            "write a duration such as `1s`, `250ms` or `1m30s`".to_string(),
        )
    } else {
        let hint = match msg.split_once(", expected ") {
            Some((_, what)) => format!("write {what} here"),
            None => "see the field's type in Istio's API reference".to_string(),
        };
        (Code::WrongType, msg.to_string(), hint)
    };
    FieldProblem {
        severity: Severity::Error,
        path: path.to_string(),
        code,
        message,
        hint: Some(hint),
    }
}

/// What decoding one document gave.
#[derive(Debug, Default)]
pub struct Decoded {
    pub resource: Option<Resource>,
    /// A Kubernetes object (Service, Pod, Endpoints, EndpointSlice) instead of an Istio resource.
    pub kube: Option<KubeObject>,
    pub diagnostics: Vec<Diagnostic>,
}

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Decodes one document. Documents of other kinds are skipped with a note.
pub fn decode_document(doc: &Document) -> Decoded {
    let root = Arc::new(doc.root.clone());
    let source = Source {
        file: doc.file.clone(),
        line: doc.line,
        root: root.clone(),
    };
    let mut out = Decoded::default();
    let mut report = |severity, code, path: &str, message: String, hint: Option<String>, rref: Option<ResourceRef>| {
        let mut d = Diagnostic::new(severity, code, message).at(&source.file, source.line_of(path));
        d.hint = hint;
        d.resource = rref;
        d.field = (!path.is_empty()).then(|| path.to_string());
        out.diagnostics.push(d);
    };
    if !matches!(root.value, crate::load::NodeValue::Map(_)) {
        let hint = Some("a config document is a mapping with apiVersion, kind, metadata and spec".into());
        report(
            Severity::Error,
            Code::NotAnObject,
            "",
            "the document is not a mapping".into(),
            hint,
            None,
        );
        return out;
    }
    let kind_name = root.get("kind").and_then(Node::as_str).unwrap_or("");
    let api_version = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kube::KUBE_KINDS.contains(&(api_version, kind_name)) {
        let (object, problems) = decode_kube(kind_name, &root.to_json(), source.clone());
        let rref = ResourceRef {
            kind: kind_name.into(),
            namespace: object.meta.namespace.clone(),
            name: object.meta.name.clone(),
        };
        for p in problems {
            report(p.severity, p.code, &p.path, p.message, p.hint, Some(rref.clone()));
        }
        out.kube = Some(object);
        return out;
    }
    let kind = Kind::from_name(kind_name).filter(|_| group == api::GROUP);
    let Some(kind) = kind else {
        let what = if kind_name.is_empty() {
            "a document without kind".to_string()
        } else {
            kind_name.to_string()
        };
        let hint = match did_you_mean(kind_name, Kind::ALL.iter().map(|k| k.name())) {
            Some(best) if group == api::GROUP && best != kind_name => Some(format!("did you mean `{best}`?")),
            _ => None,
        };
        let msg = format!(
            "skipped {what} ({}): not an Istio networking resource meshbench uses",
            api_version
        );
        report(Severity::Info, Code::SkippedDocument, "", msg, hint, None);
        return out;
    };
    if !api::VERSIONS.contains(&version) {
        let hint = Some(format!("use {}/v1 (v1beta1 and v1alpha3 are accepted too)", api::GROUP));
        let msg = format!("apiVersion `{api_version}` is not supported for {kind}");
        report(
            Severity::Error,
            Code::UnsupportedApiVersion,
            "apiVersion",
            msg,
            hint,
            None,
        );
        return out;
    }
    let json = root.to_json();
    let empty = Value::Object(Default::default());
    let (mut meta, meta_problems): (ObjectMeta, _) =
        decode_lenient(json.get("metadata").cloned().unwrap_or(empty.clone()), "metadata");
    let namespace_absent = meta.namespace.is_empty();
    if namespace_absent {
        meta.namespace = "default".into();
    }
    let rref = ResourceRef {
        kind: kind.name().into(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    };
    if let Value::Object(map) = &json {
        for key in map.keys().filter(|k| !TOP_LEVEL.contains(&k.as_str())) {
            let hint = match did_you_mean(key, TOP_LEVEL.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("remove it; top-level fields are {}", TOP_LEVEL.join(", ")),
            };
            let msg = format!("unknown field `{key}`");
            report(
                Severity::Error,
                Code::UnknownField,
                key,
                msg,
                Some(hint),
                Some(rref.clone()),
            );
        }
    }
    let spec_json = json.get("spec").cloned().unwrap_or(empty);
    let (spec, spec_problems) = decode_spec(kind, spec_json);
    for p in meta_problems.into_iter().chain(spec_problems) {
        report(p.severity, p.code, &p.path, p.message, p.hint, Some(rref.clone()));
    }
    if meta.name.is_empty() {
        let hint = Some("give the resource a name under metadata.name".into());
        report(
            Severity::Error,
            Code::MissingName,
            "metadata",
            "metadata.name is required".into(),
            hint,
            Some(rref.clone()),
        );
    }
    if namespace_absent {
        let hint = Some("set metadata.namespace explicitly; Istio puts the resource in `default`".into());
        let msg = "metadata.namespace is not set: the resource is in namespace `default`".into();
        report(
            Severity::Warning,
            Code::DefaultNamespace,
            "metadata",
            msg,
            hint,
            Some(rref),
        );
    }
    out.resource = Some(Resource {
        api_version: api_version.to_string(),
        meta,
        spec,
        status: json.get("status").cloned().unwrap_or_default(),
        source,
    });
    out
}

/// A Kubernetes object, read as leniently as the API server reads it: unknown fields are
/// ignored, fields of the wrong type are reported and left at their defaults.
fn decode_kube(kind: &str, json: &Value, source: Source) -> (KubeObject, Vec<FieldProblem>) {
    let part = |key: &str| json.get(key).cloned().unwrap_or(Value::Object(Default::default()));
    let (mut meta, mut problems): (KubeMeta, _) = decode_lenient(part("metadata"), "metadata");
    if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    let spec = match kind {
        "Service" => {
            let (s, p) = decode_lenient(part("spec"), "spec");
            problems.extend(p);
            KubeSpec::Service(s)
        }
        "Pod" => {
            let (spec, p) = decode_lenient(part("spec"), "spec");
            problems.extend(p);
            let (status, p) = decode_lenient(part("status"), "status");
            problems.extend(p);
            KubeSpec::Pod { spec, status }
        }
        "Endpoints" => {
            let subsets = json.get("subsets").cloned().unwrap_or(Value::Array(Vec::new()));
            let (s, p) = decode_lenient(subsets, "subsets");
            problems.extend(p);
            KubeSpec::Endpoints(s)
        }
        _ => {
            let list = |key: &str| json.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
            let (endpoints, p) = decode_lenient(list("endpoints"), "endpoints");
            problems.extend(p);
            let (ports, p) = decode_lenient(list("ports"), "ports");
            problems.extend(p);
            KubeSpec::EndpointSlice { endpoints, ports }
        }
    };
    (KubeObject { meta, spec, source }, problems)
}

fn decode_spec(kind: Kind, json: Value) -> (Spec, Vec<FieldProblem>) {
    fn go<T: DeserializeOwned + Default>(json: Value, wrap: fn(T) -> Spec) -> (Spec, Vec<FieldProblem>) {
        let (t, problems) = decode_lenient(json, "spec");
        (wrap(t), problems)
    }
    match kind {
        Kind::Gateway => go(json, Spec::Gateway),
        Kind::VirtualService => go(json, Spec::VirtualService),
        Kind::DestinationRule => go(json, Spec::DestinationRule),
        Kind::ServiceEntry => go(json, Spec::ServiceEntry),
        Kind::WorkloadEntry => go(json, Spec::WorkloadEntry),
    }
}

/// Decodes a MeshConfig document (the contents of Istio's `mesh` config). Fields meshbench does
/// not use are ignored with a note; a field it uses with a bad value is an error.
pub fn decode_mesh(doc: &Document) -> (MeshConfig, Vec<Diagnostic>) {
    let mut json = doc.root.to_json();
    let mut diags = Vec::new();
    let at = |path: &str| doc.root.line_of(path);
    if let Value::Object(map) = &mut json {
        let unknown: Vec<String> = map
            .keys()
            .filter(|k| !MeshConfig::FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            map.remove(&key);
            let hint = match did_you_mean(&key, MeshConfig::FIELDS.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("meshbench uses only: {}", MeshConfig::FIELDS.join(", ")),
            };
            let mut d = Diagnostic::new(
                Severity::Info,
                Code::UnknownField,
                format!("MeshConfig field `{key}` is not used by meshbench; ignored"),
            )
            .with_hint(hint)
            .at(&doc.file, at(&key));
            d.field = Some(key);
            diags.push(d);
        }
    }
    let (mesh, problems) = decode_lenient::<MeshConfig>(json, "");
    for p in problems {
        let mut d = Diagnostic::new(p.severity, p.code, p.message).at(&doc.file, at(&p.path));
        d.hint = p.hint;
        d.field = Some(p.path);
        diags.push(d);
    }
    (mesh, diags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_str;

    fn decode(text: &str) -> Decoded {
        let sources = parse_str("t.yaml", text);
        decode_document(&sources.documents[0])
    }

    #[test]
    fn every_unknown_field_is_reported_with_a_suggestion() {
        let d = decode(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: a}\nspec:\n  \
             hostz: [a]\n  http:\n  - route:\n    - destinaton: {host: a}\n      wieght: 3\n",
        );
        let unknown: Vec<_> = d.diagnostics.iter().filter(|d| d.code == Code::UnknownField).collect();
        assert_eq!(unknown.len(), 3, "{:#?}", d.diagnostics);
        assert_eq!(unknown[0].field.as_deref(), Some("spec.hostz"));
        assert_eq!(unknown[0].line, Some(5));
        assert!(unknown[0]
            .hint
            .as_deref()
            .unwrap_or("")
            .starts_with("did you mean `hosts`?"));
        assert_eq!(unknown[1].field.as_deref(), Some("spec.http[0].route[0].destinaton"));
        assert_eq!(unknown[1].line, Some(8));
        assert!(unknown[2]
            .hint
            .as_deref()
            .unwrap_or("")
            .starts_with("did you mean `weight`?"));
    }

    #[test]
    fn unknown_enum_values_suggest_the_closest() {
        let d = decode(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g, namespace: a}\nspec:\n  \
             servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPEL}\n",
        );
        let e = &d.diagnostics[0];
        assert_eq!(e.code, Code::UnknownEnumValue);
        assert_eq!(e.field.as_deref(), Some("spec.servers[0].tls.mode"));
        assert_eq!(e.line, Some(8));
        assert!(e.hint.as_deref().unwrap_or("").starts_with("did you mean `SIMPLE`?"));
    }

    #[test]
    fn wrong_types_and_bad_durations_are_errors_and_decoding_goes_on() {
        let d = decode(
            "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: r, namespace: a}\n\
             spec:\n  hosts: a\n  http:\n  - timeout: 10ss\n    route: [{destination: {host: a}}]\n",
        );
        let codes: Vec<_> = d.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![Code::WrongType, Code::InvalidDuration]);
        let Some(Spec::VirtualService(vs)) = d.resource.map(|r| r.spec) else {
            panic!("not decoded")
        };
        assert_eq!(
            vs.http[0].route[0].destination.as_ref().map(|d| d.host.as_str()),
            Some("a")
        );
    }

    #[test]
    fn snake_case_fields_are_read_as_istio_reads_them_with_a_note() {
        let d = decode(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: x}\nspec:\n  host: a\n  \
             traffic_policy:\n    connection_pool: {http: {max_retries: 3}}\n  subsets: [{name: v1, labels: {my_label: a}}]\n",
        );
        let Some(Spec::DestinationRule(dr)) = d.resource.map(|r| r.spec) else {
            panic!("no rule")
        };
        let http = dr
            .traffic_policy
            .and_then(|t| t.connection_pool)
            .and_then(|c| c.http)
            .expect("http");
        assert_eq!(http.max_retries, Some(3));
        assert_eq!(
            dr.subsets[0].labels.get("my_label").map(String::as_str),
            Some("a"),
            "map keys are data"
        );
        let notes: Vec<_> = d
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.field.clone().unwrap_or_default(), d.line))
            .collect();
        assert_eq!(
            notes,
            [
                (Severity::Info, "spec.traffic_policy".to_string(), Some(6)),
                (
                    Severity::Info,
                    "spec.trafficPolicy.connection_pool".to_string(),
                    Some(7)
                ),
                (
                    Severity::Info,
                    "spec.trafficPolicy.connectionPool.http.max_retries".to_string(),
                    Some(7)
                ),
            ]
        );
        // Both spellings at once: the camelCase one is kept and the other is an unknown field.
        let d = decode("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: x}\nspec: {host: a, export_to: [a], exportTo: [b]}\n");
        assert!(d
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.code == Code::UnknownField));
    }

    #[test]
    fn other_kinds_are_skipped_with_a_note() {
        let d = decode("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n");
        assert!(d.resource.is_none() && d.kube.is_none());
        assert_eq!(d.diagnostics.len(), 1);
        assert_eq!(d.diagnostics[0].severity, Severity::Info);
        assert_eq!(d.diagnostics[0].code, Code::SkippedDocument);
        // Gateway API's Gateway shares the kind name but not the group.
        let d = decode("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: s}\n");
        assert_eq!(d.diagnostics[0].code, Code::SkippedDocument);
    }

    #[test]
    fn unsupported_version_and_missing_namespace() {
        let d = decode("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}\n");
        assert_eq!(d.diagnostics[0].code, Code::UnsupportedApiVersion);
        let d = decode("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n");
        let r = d.resource.as_ref().map(|r| r.namespace().to_string());
        assert_eq!(r.as_deref(), Some("default"));
        assert_eq!(d.diagnostics[0].code, Code::DefaultNamespace);
        assert_eq!(d.diagnostics[0].severity, Severity::Warning);
    }
}
