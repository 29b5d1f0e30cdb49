//! A loaded config: every resource from a set of files, the mesh settings, and what loading found.

use std::collections::HashMap;
use std::path::Path;

use crate::api::kube::KubeObject;
use crate::api::{Kind, MeshConfig, Resource};
use crate::decode::{decode_document, decode_mesh};
use crate::diag::{Code, Diagnostic, ResourceRef, Severity};
use crate::load::{self, ReadError, Sources};

/// Every resource of a config, in load order, with the mesh settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Every resource, in load order. Add with [`Config::push`], which keeps the index right.
    pub resources: Vec<Resource>,
    /// Kubernetes Services, Pods, Endpoints and EndpointSlices, in load order.
    pub kube: Vec<KubeObject>,
    pub mesh: MeshConfig,
    /// Positions in `resources` by kind, and by (kind, namespace, name).
    by_kind: HashMap<Kind, Vec<usize>>,
    by_key: HashMap<(Kind, String, String), usize>,
}

/// A config together with the problems loading it found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// Adds a resource; false (and nothing added) when one of its kind, namespace and name is there.
    /// Room for `n` more resources, so that loading a large config does not copy every resource
    /// already loaded each time the list doubles.
    pub fn reserve(&mut self, n: usize) {
        self.resources.reserve(n);
        self.by_key.reserve(n);
    }

    pub fn push(&mut self, resource: Resource) -> bool {
        let key = (
            resource.kind(),
            resource.namespace().to_string(),
            resource.name().to_string(),
        );
        if self.by_key.contains_key(&key) {
            return false;
        }
        self.by_key.insert(key, self.resources.len());
        self.by_kind
            .entry(resource.kind())
            .or_default()
            .push(self.resources.len());
        self.resources.push(resource);
        true
    }

    /// Resources of one kind, in load order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.by_kind
            .get(&kind)
            .into_iter()
            .flatten()
            .map(move |&i| &self.resources[i])
    }

    /// A resource by kind, namespace and name.
    pub fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Resource> {
        let i = self.by_key.get(&(kind, namespace.to_string(), name.to_string()))?;
        self.resources.get(*i)
    }

    /// Kubernetes objects of one kind (`Service`, `Pod`, `Endpoints`, `EndpointSlice`).
    pub fn kube_of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a KubeObject> + 'a {
        self.kube.iter().filter(move |o| o.spec.kind() == kind)
    }

    /// The FQDN suffix for short names: `svc.<domainSuffix>`.
    pub fn domain_suffix(&self) -> &str {
        &self.mesh.domain_suffix
    }
}

/// Loads resources from paths (files, directories, `-` for stdin) and an optional mesh config file.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], mesh: Option<&Path>) -> Result<Loaded, ReadError> {
    let sources = load::read_paths(paths)?;
    let mut loaded = from_sources(sources);
    if let Some(mesh_path) = mesh {
        let mesh_sources = load::read_paths(&[mesh_path])?;
        apply_mesh(&mut loaded, mesh_sources);
    }
    Ok(loaded)
}

/// Loads resources from YAML text (tests, embedded suites).
pub fn load_str(file: &str, text: &str) -> Loaded {
    from_sources(load::parse_str(file, text))
}

/// Applies a mesh config read from YAML text to `loaded`.
pub fn apply_mesh_str(loaded: &mut Loaded, file: &str, text: &str) {
    apply_mesh(loaded, load::parse_str(file, text));
}

fn apply_mesh(loaded: &mut Loaded, sources: Sources) {
    loaded
        .diagnostics
        .extend(sources.problems.into_iter().map(yaml_problem));
    if let Some(doc) = sources.documents.first() {
        let (mesh, diags) = decode_mesh(doc);
        loaded.config.mesh = mesh;
        loaded.diagnostics.extend(diags);
    }
}

fn yaml_problem(p: load::YamlProblem) -> Diagnostic {
    let code = if p.message.starts_with("duplicate key") {
        Code::DuplicateKey
    } else {
        Code::YamlSyntax
    };
    let m = p.message.as_str();
    let hint = match code {
        Code::DuplicateKey => "keep one of the two entries; the later one is used",
        _ if m.contains("aliases expand") => {
            "write the repeated part out, or alias less: Kubernetes' YAML reader refuses excessive aliasing too"
        }
        _ if m.contains("levels deep") => "flatten the structure: no Istio resource nests this deep",
        _ if m.contains("MiB") || m.contains("documents") => {
            "split the config into smaller sets, or keep only what the gateway needs"
        }
        _ => "fix the YAML at this line (indentation, a missing `:` or an unclosed bracket or quote)",
    };
    Diagnostic::new(Severity::Error, code, p.message)
        .with_hint(hint)
        .at(&p.file, p.line)
}

fn from_sources(sources: Sources) -> Loaded {
    let mut loaded = Loaded::default();
    loaded
        .diagnostics
        .extend(sources.problems.into_iter().map(yaml_problem));
    let mut kube_seen = KubeSeen::new();
    loaded.config.reserve(sources.documents.len());
    for doc in &sources.documents {
        match list_items(doc) {
            Some(items) => {
                for item in &items {
                    add_document(&mut loaded, &mut kube_seen, item);
                }
            }
            None => add_document(&mut loaded, &mut kube_seen, doc),
        }
    }
    loaded
}

/// Decodes one document into the config, or into a diagnostic when it is a duplicate.
fn add_document(loaded: &mut Loaded, kube_seen: &mut KubeSeen, doc: &load::Document) {
    let decoded = decode_document(doc);
    loaded.diagnostics.extend(decoded.diagnostics);
    if let Some(object) = decoded.kube {
        add_kube_object(loaded, kube_seen, object);
        return;
    }
    let Some(resource) = decoded.resource else { return };
    if let Some(first) = loaded
        .config
        .find(resource.kind(), resource.namespace(), resource.name())
    {
        let msg = format!(
            "{} {} is defined twice; the first definition ({}:{}) is used",
            resource.kind(),
            resource.key(),
            first.source.file,
            first.source.line
        );
        let mut d = Diagnostic::new(Severity::Error, Code::DuplicateResource, msg)
            .with_hint("rename one of them or delete the duplicate")
            .at(&resource.source.file, resource.source.line);
        d.resource = Some(ResourceRef {
            kind: resource.kind().name().into(),
            namespace: resource.namespace().into(),
            name: resource.name().into(),
        });
        loaded.diagnostics.push(d);
        return;
    }
    loaded.config.push(resource);
}

/// A `kind: List` document's items (what `kubectl get … -o yaml` prints); None for any other
/// document.
fn list_items(doc: &load::Document) -> Option<Vec<load::Document>> {
    let is_list = doc.root.get("kind").and_then(load::Node::as_str) == Some("List");
    let items = match doc.root.get("items").map(|n| &n.value) {
        Some(load::NodeValue::Seq(items)) if is_list => items,
        Some(load::NodeValue::Null) | None if is_list => return Some(Vec::new()),
        _ => return None,
    };
    let items = items
        .iter()
        .map(|item| load::Document {
            file: doc.file.clone(),
            line: item.line,
            index: doc.index,
            root: item.clone(),
        })
        .collect();
    Some(items)
}

/// Kubernetes objects by (kind, namespace, name), as positions in `Config::kube`.
type KubeSeen = HashMap<(&'static str, String, String), usize>;

fn add_kube_object(loaded: &mut Loaded, seen: &mut KubeSeen, object: KubeObject) {
    let kind = object.spec.kind();
    let key = (kind, object.meta.namespace.clone(), object.meta.name.clone());
    if let Some(&at) = seen.get(&key) {
        let first = &loaded.config.kube[at];
        let msg = format!(
            "{kind} {} is defined twice; the first definition ({}:{}) is used",
            object.key(),
            first.source.file,
            first.source.line
        );
        let mut d = Diagnostic::new(Severity::Error, Code::DuplicateResource, msg)
            .with_hint("rename one of them or delete the duplicate")
            .at(&object.source.file, object.source.line);
        d.resource = Some(ResourceRef {
            kind: kind.into(),
            namespace: object.meta.namespace.clone(),
            name: object.meta.name.clone(),
        });
        loaded.diagnostics.push(d);
        return;
    }
    seen.insert(key, loaded.config.kube.len());
    loaded.config.kube.push(object);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_read_as_its_items_with_their_own_lines() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n\
            - apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: gw, namespace: a}\n  spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n\
            - apiVersion: v1\n  kind: Service\n  metadata: {name: web, namespace: a}\n  spec: {ports: [{port: 80, name: http}]}\n\
            - apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: gw, namespace: a}\n  spec: {servers: []}\n\
            ---\napiVersion: v1\nkind: List\nitems: []\n";
        let loaded = load_str("l.yaml", yaml);
        assert_eq!(loaded.config.resources.len(), 1);
        assert_eq!(loaded.config.resources[0].source.line, 4);
        assert_eq!(loaded.config.kube_of_kind("Service").count(), 1);
        let dup: Vec<_> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::DuplicateResource)
            .collect();
        assert_eq!(dup.len(), 1, "{:#?}", loaded.diagnostics);
        assert_eq!(dup[0].line, Some(12));
        let kube_dup = load_str("k.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
        assert_eq!(kube_dup.config.kube.len(), 1);
        assert!(kube_dup
            .diagnostics
            .iter()
            .any(|d| d.code == Code::DuplicateResource && d.line == Some(5)));
    }
}
