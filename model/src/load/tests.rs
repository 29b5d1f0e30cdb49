//! The YAML loader: scalars as Kubernetes reads them, lines, duplicate keys, and the limits.

use super::*;

const TWO_DOCS: &str = "\
apiVersion: v1
kind: Service
---
# comment
kind: Gateway
spec:
  servers:
  - port:
      number: 80
    hosts: ['*']
";

#[test]
fn documents_keep_file_and_line() {
    let s = parse_str("a.yaml", TWO_DOCS);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.documents.len(), 2);
    assert_eq!(s.documents[0].line, 1);
    assert_eq!(s.documents[1].line, 5);
    assert_eq!(s.documents[1].index, 1);
    assert_eq!(&*s.documents[1].file, "a.yaml");
}

#[test]
fn line_of_follows_field_paths() {
    let s = parse_str("a.yaml", TWO_DOCS);
    let root = &s.documents[1].root;
    assert_eq!(root.line_of("spec.servers[0].port.number"), 9);
    assert_eq!(root.line_of("spec.servers[0].hosts"), 10);
    // A path that leaves the tree stops at the deepest node it reached.
    assert_eq!(root.line_of("spec.servers[0].tls.mode"), 8);
}

#[test]
fn scalars_are_typed_like_yaml_and_quotes_keep_strings() {
    let s = parse_str("a", "a: 80\nb: '80'\nc: true\nd: 1.5\ne: ~\nf: yes\n");
    let j = s.documents[0].root.to_json();
    assert_eq!(
        j,
        serde_json::json!({"a": 80, "b": "80", "c": true, "d": 1.5, "f": "yes"})
    );
}

#[test]
fn syntax_error_keeps_earlier_documents_and_names_the_line() {
    let s = parse_str("a.yaml", "kind: A\n---\nkind: [B\n");
    assert_eq!(s.documents.len(), 1);
    assert_eq!(s.problems.len(), 1);
    assert!(s.problems[0].message.starts_with("YAML syntax error"));
    assert!(s.problems[0].line >= 3);
}

#[test]
fn duplicate_keys_are_reported() {
    let s = parse_str("a.yaml", "kind: A\nspec: 1\nspec: 2\n");
    assert_eq!(s.problems.len(), 1);
    assert_eq!(s.problems[0].line, 3);
    assert_eq!(s.documents[0].root.to_json()["spec"], 2);
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let s = parse_str("a", "a: &x {b: 1}\nc: *x\n");
    assert_eq!(s.documents[0].root.to_json()["c"]["b"], 1);
}

#[test]
fn path_segments_split_keys_and_indexes() {
    let segs: Vec<_> = path_segments("spec.http[1].route[0]").collect();
    assert_eq!(
        segs,
        vec![
            Segment::Key("spec"),
            Segment::Key("http"),
            Segment::Index(1),
            Segment::Key("route"),
            Segment::Index(0)
        ]
    );
}

#[test]
fn aliases_expand_within_a_budget_and_a_bomb_stops_with_its_line() {
    let ok = parse_str("a.yaml", "a: &x [1, 2]\nb: *x\n");
    assert!(ok.problems.is_empty());
    assert_eq!(ok.documents[0].root.get("b").map(Node::size), Some(3));
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let start = std::time::Instant::now();
    let s = parse_str("bomb.yaml", &bomb);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert_eq!(s.problems[0].line, 4, "where a3 expands past the budget");
    assert!(s.problems[0]
        .message
        .contains("aliases expand to more than 10000 nodes"));
    assert!(s.documents[0].root.size() < 2 * MAX_ALIAS_NODES);
    // The budget is per document.
    let two = format!("{}---\n{}", "a: &x [1]\nb: *x\n", "c: &y [1]\nd: *y\n");
    assert!(parse_str("t.yaml", &two).problems.is_empty());
}

#[test]
fn nesting_past_the_limit_is_null_and_the_rest_is_read() {
    let deep = format!("a: {}{}\nb: 1\n", "[".repeat(MAX_DEPTH + 5), "]".repeat(MAX_DEPTH + 5));
    let s = parse_str("d.yaml", &deep);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(s.problems[0].message.contains("levels deep"));
    assert_eq!(
        s.documents[0].root.get("b").map(|n| n.value.clone()),
        Some(NodeValue::Int(1))
    );
    let fine = format!("a: {}{}\n", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
    assert!(parse_str("f.yaml", &fine).problems.is_empty());
}

#[test]
fn too_many_bytes_or_documents_are_refused_with_a_problem() {
    let dir = std::env::temp_dir().join(format!("meshbench-load-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    let many = dir.join("many.yaml");
    std::fs::write(&many, "a: 1\n---\n".repeat(MAX_DOCUMENTS + 3)).unwrap_or_default();
    let s = read_paths(&[&many]).expect("read");
    assert_eq!(s.documents.len(), MAX_DOCUMENTS);
    assert!(s.problems.iter().any(|p| p.message.contains("documents")));
    let big = dir.join("big.yaml");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(MAX_BYTES + 1).expect("size");
    let s = read_paths(&[&big]).expect("read");
    assert!(s.documents.is_empty());
    assert!(s.problems[0].message.contains("larger than 64 MiB"), "{:?}", s.problems);
    let _ = std::fs::remove_dir_all(&dir);
}
