//! The only code that parses YAML. Turns files, directories and stdin into documents whose
//! every node keeps its line, so a diagnostic can point at `file:line` for any field path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

mod go_yaml;

/// What one load reads at most: bytes over all files, documents over all files.
pub const MAX_BYTES: u64 = 64 << 20;
pub const MAX_DOCUMENTS: usize = 250_000;
/// Nodes that aliases may expand to in one document (a "billion laughs" file stops here).
pub const MAX_ALIAS_NODES: usize = 10_000;
/// Nesting of sequences and mappings (deeper input would exhaust the stack of recursive readers).
pub const MAX_DEPTH: usize = 64;

/// One YAML node with the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: NodeValue,
}

/// The value of a node. Mapping entries keep source order and the line of their key.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<MapEntry>),
}

/// One `key: value` entry of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct MapEntry {
    pub key: String,
    pub key_line: usize,
    pub value: Node,
}

/// One YAML document of a file (or of stdin), with the line its content starts on.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: Arc<str>,
    pub line: usize,
    /// Position of the document in its file, 0-based.
    pub index: usize,
    pub root: Node,
}

/// A problem found while reading YAML: a syntax error, a duplicate key.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlProblem {
    pub file: Arc<str>,
    pub line: usize,
    pub message: String,
}

/// A path given by the user that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct Sources {
    pub documents: Vec<Document>,
    pub problems: Vec<YamlProblem>,
}

impl Node {
    /// The child of a mapping by key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The number of nodes in this tree.
    pub fn size(&self) -> usize {
        1 + match &self.value {
            NodeValue::Seq(items) => items.iter().map(Node::size).sum(),
            NodeValue::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
            _ => 0,
        }
    }

    /// The string value of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The line of the deepest node on a field path such as `spec.http[1].route[0].weight`.
    /// A path that leaves the tree stops at the last node it reached.
    pub fn line_of(&self, path: &str) -> usize {
        let mut node = self;
        let mut line = self.line;
        for segment in path_segments(path) {
            let next = match (&node.value, segment) {
                // A camelCase field may be written with its proto (snake_case) name.
                (NodeValue::Map(entries), Segment::Key(k)) => entries
                    .iter()
                    .find(|e| e.key == k)
                    .or_else(|| {
                        entries
                            .iter()
                            .find(|e| e.key.contains('_') && e.key.replace('_', "").eq_ignore_ascii_case(k))
                    })
                    .map(|e| (e.key_line, &e.value)),
                (NodeValue::Seq(items), Segment::Index(i)) => items.get(i).map(|n| (n.line, n)),
                _ => None,
            };
            match next {
                Some((l, n)) => {
                    line = l;
                    node = n;
                }
                None => break,
            }
        }
        line
    }

    /// The node as JSON, the input of the typed decoders. A mapping entry whose value is
    /// null is left out: in Istio's (protobuf) JSON a null field is an absent one.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .filter(|e| e.value.value != NodeValue::Null)
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node tree from JSON; every node gets `line`. For documents made in code.
    pub fn from_json(value: &serde_json::Value, line: usize) -> Node {
        use serde_json::Value;
        let value = match value {
            Value::Null => NodeValue::Null,
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeValue::Int(i),
                None => NodeValue::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => NodeValue::Str(s.clone()),
            Value::Array(items) => NodeValue::Seq(items.iter().map(|v| Node::from_json(v, line)).collect()),
            Value::Object(map) => NodeValue::Map(
                map.iter()
                    .map(|(k, v)| MapEntry {
                        key: k.clone(),
                        key_line: line,
                        value: Node::from_json(v, line),
                    })
                    .collect(),
            ),
        };
        Node { line, value }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `Key(a) Key(b) Index(2) Key(c)`.
pub fn path_segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let key = (!key.is_empty()).then_some(Segment::Key(key));
        let indexes = rest
            .split(['[', ']'])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_or(Segment::Key(s), Segment::Index));
        key.into_iter().chain(indexes)
    })
}

/// Parses every document of one YAML text. Documents before a syntax error are kept.
pub fn parse_str(file: &str, text: &str) -> Sources {
    let file: Arc<str> = Arc::from(file);
    let mut builder = Builder::new(file.clone());
    let text = go_yaml::quote_flow_colons(text);
    let mut parser = Parser::new_from_str(&text);
    let mut problems = Vec::new();
    if let Err(e) = parser.load(&mut builder, true) {
        problems.push(YamlProblem {
            file: file.clone(),
            line: e.marker().line(),
            message: format!("YAML syntax error: {}", e.info()),
        });
    }
    problems.append(&mut builder.problems);
    Sources {
        documents: builder.documents,
        problems,
    }
}

/// Reads files, directories (recursively, `*.yaml` and `*.yml`, in name order) and `-` (stdin).
pub fn read_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Sources, ReadError> {
    let mut out = Sources::default();
    let mut budget = MAX_BYTES;
    for path in paths {
        let path = path.as_ref();
        if path == Path::new("-") {
            let mut text = String::new();
            let mut stdin = std::io::Read::take(std::io::stdin(), budget + 1);
            std::io::Read::read_to_string(&mut stdin, &mut text).map_err(|source| ReadError {
                path: "-".into(),
                source,
            })?;
            if text.len() as u64 > budget {
                out.problems.push(too_big("<stdin>", text.len() as u64));
                return Ok(out);
            }
            budget -= text.len() as u64;
            out.extend(parse_str("<stdin>", &text));
            continue;
        }
        for file in yaml_files(path)? {
            let name = file.display().to_string();
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if len > budget {
                out.problems.push(too_big(&name, len));
                return Ok(out);
            }
            let text = std::fs::read_to_string(&file).map_err(|source| ReadError {
                path: name.clone(),
                source,
            })?;
            budget = budget.saturating_sub(text.len() as u64);
            out.extend(parse_str(&name, &text));
        }
    }
    if out.documents.len() > MAX_DOCUMENTS {
        let first_over = &out.documents[MAX_DOCUMENTS];
        out.problems.push(YamlProblem {
            file: first_over.file.clone(),
            line: first_over.line,
            message: format!(
                "more than {MAX_DOCUMENTS} documents: the documents from here on are not read (split the config, or keep what one gateway needs)"
            ),
        });
        out.documents.truncate(MAX_DOCUMENTS);
    }
    Ok(out)
}

fn too_big(file: &str, len: u64) -> YamlProblem {
    YamlProblem {
        file: Arc::from(file),
        line: 1,
        message: format!(
            "the config is larger than {} MiB with this file ({} MiB); it is not read",
            MAX_BYTES >> 20,
            len.div_ceil(1 << 20)
        ),
    }
}

impl Sources {
    fn extend(&mut self, other: Sources) {
        self.documents.extend(other.documents);
        self.problems.extend(other.problems);
    }
}

/// The files [`read_paths`] reads for one path: the file itself, or a directory's `*.yaml` and
/// `*.yml` files, recursively, in name order.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let err = |source| ReadError {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(yaml_files(&entry)?);
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Renders JSON as YAML (for `--output yaml`): the one place that writes YAML.
pub fn to_yaml_string(value: &serde_json::Value) -> String {
    fn convert(v: &serde_json::Value) -> Yaml {
        use serde_json::Value;
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(items) => Yaml::Array(items.iter().map(convert).collect()),
            Value::Object(map) => Yaml::Hash(map.iter().map(|(k, v)| (Yaml::String(k.clone()), convert(v))).collect()),
        }
    }
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    // Emitting into a String cannot fail: the only error is a fmt::Error from the writer.
    let _ = emitter.dump(&convert(value));
    out.push('\n');
    out
}

/// Builds node trees from the parser's events.
struct Builder {
    file: Arc<str>,
    documents: Vec<Document>,
    problems: Vec<YamlProblem>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    doc_line: usize,
    doc_index: usize,
    /// Nodes aliases have expanded to in this document.
    expanded: usize,
    /// Inside a collection nested too deep (or after the alias budget ran out): how many
    /// collections deep into the skipped part the parser is.
    skipping: usize,
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        key: Option<(String, usize)>,
    },
}

impl Builder {
    fn new(file: Arc<str>) -> Self {
        Builder {
            file,
            documents: Vec::new(),
            problems: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            doc_line: 1,
            doc_index: 0,
            expanded: 0,
            skipping: 0,
        }
    }

    fn problem(&mut self, line: usize, message: String) {
        self.problems.push(YamlProblem {
            file: self.file.clone(),
            line,
            message,
        });
    }

    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if node.value != NodeValue::Null {
                    let line = node.line.max(self.doc_line);
                    self.documents.push(Document {
                        file: self.file.clone(),
                        line,
                        index: self.doc_index,
                        root: node,
                    });
                }
            }
            Some(Frame::Seq { node: seq, .. }) => {
                if let NodeValue::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map { node: map, key, .. }) => match key.take() {
                None => *key = Some((scalar_key(&node), node.line)),
                Some((k, key_line)) => {
                    if let NodeValue::Map(entries) = &mut map.value {
                        if entries.iter().any(|e| e.key == k) {
                            self.problems.push(YamlProblem {
                                file: self.file.clone(),
                                line: key_line,
                                message: format!("duplicate key `{k}`: a mapping may name a field once"),
                            });
                            entries.retain(|e| e.key != k);
                        }
                        entries.push(MapEntry {
                            key: k,
                            key_line,
                            value: node,
                        });
                    }
                }
            },
        }
    }
}

fn scalar_key(node: &Node) -> String {
    match &node.value {
        NodeValue::Str(s) => s.clone(),
        NodeValue::Null => String::new(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Seq(_) | NodeValue::Map(_) => node.to_json().to_string(),
    }
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&yaml_rust2::parser::Tag>) -> NodeValue {
    let explicit_str = tag.is_some_and(|t| t.suffix == "str");
    if style != TScalarStyle::Plain || explicit_str {
        return NodeValue::Str(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => NodeValue::Null,
        Yaml::Boolean(b) => NodeValue::Bool(b),
        Yaml::Integer(i) => NodeValue::Int(i),
        Yaml::Real(r) => r.parse().map_or(NodeValue::Str(text), NodeValue::Float),
        _ => NodeValue::Str(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        if self.skipping > 0 {
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skipping += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    self.skipping -= 1;
                    if self.skipping == 0 {
                        self.push(
                            Node {
                                line,
                                value: NodeValue::Null,
                            },
                            0,
                        );
                    }
                }
                _ => {}
            }
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.doc_line = line;
                self.anchors.clear();
                self.expanded = 0;
            }
            Event::DocumentEnd => self.doc_index += 1,
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref());
                self.push(Node { line, value }, anchor);
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    line,
                    value: NodeValue::Null,
                });
                let size = node.size();
                if self.expanded <= MAX_ALIAS_NODES && self.expanded + size > MAX_ALIAS_NODES {
                    self.expanded = MAX_ALIAS_NODES + 1;
                    let msg = format!(
                        "aliases expand to more than {MAX_ALIAS_NODES} nodes in this document (an alias bomb?); the rest are read as null"
                    );
                    self.problem(line, msg);
                }
                if self.expanded > MAX_ALIAS_NODES {
                    self.push(
                        Node {
                            line,
                            value: NodeValue::Null,
                        },
                        0,
                    );
                    return;
                }
                self.expanded += size;
                self.push(node, 0);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.problem(
                    line,
                    format!("nested more than {MAX_DEPTH} levels deep; this part is read as null"),
                );
                self.skipping = 1;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                node: Node {
                    line,
                    value: NodeValue::Seq(Vec::new()),
                },
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                node: Node {
                    line,
                    value: NodeValue::Map(Vec::new()),
                },
                anchor,
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Frame::Seq { node, anchor } | Frame::Map { node, anchor, .. }) = self.stack.pop() {
                    self.push(node, anchor);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests;
