//! The webhook's warnings about rules no request reaches, as Istio computes them
//! (`analyzeUnreachableHTTPRules`, `…TCPRules`, `…TLSRules` in pkg/config/validation):
//! - IST0130 (a rule never used): a rule after a rule without matches, a second rule without
//!   matches, or a rule every match of which an earlier rule already has;
//! - IST0131 (a match never used): a match equal to an earlier one (its name aside), or, for HTTP
//!   `uri.prefix` matches, one that an earlier prefix match covers (a shorter prefix with the same
//!   port and headers, query parameters and absent headers, method and authority equal or wider).
//!
//! Istio's notion of "catch-all" is only a rule without matches: `prefix: /` is covered by the
//! prefix rule above, and an `exact` URI after `prefix: /` is not flagged, as in Istio.

use std::collections::{BTreeMap, HashMap};

use super::Sink;
use crate::api::virtual_service::{HttpMatchRequest, HttpRoute, VirtualService};
use crate::api::StringMatch;
use crate::diag::Code;

pub fn check(s: &mut Sink, vs: &VirtualService) {
    let http: Vec<Rule> = vs
        .http
        .iter()
        .map(|r| Rule {
            name: r.name.clone(),
            matches: r.matches.iter().map(http_key).collect(),
        })
        .collect();
    let tls: Vec<Rule> = vs.tls.iter().map(|r| Rule::l4(&r.matches)).collect();
    let tcp: Vec<Rule> = vs.tcp.iter().map(|r| Rule::l4(&r.matches)).collect();
    let prefixes = duplicates(s, "http", &http);
    overlapping_prefixes(s, &vs.http, &prefixes);
    duplicates(s, "tls", &tls);
    duplicates(s, "tcp", &tcp);
}

/// One rule as the duplicate check sees it: each match as a canonical JSON text.
struct Rule {
    name: Option<String>,
    matches: Vec<String>,
}

impl Rule {
    fn l4<T: serde::Serialize>(matches: &[T]) -> Rule {
        Rule {
            name: None,
            matches: matches
                .iter()
                .map(|m| serde_json::to_string(m).unwrap_or_default())
                .collect(),
        }
    }

    fn label(&self, i: usize) -> String {
        label(self.name.as_deref(), i)
    }
}

/// How a message names rule `i`: by its name, or by number when it has none (or an empty one).
fn label(name: Option<&str>, i: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("`{n}`"),
        _ => format!("#{i}"),
    }
}

/// A match compared without its name, which routes nothing.
fn http_key(m: &HttpMatchRequest) -> String {
    let unnamed = HttpMatchRequest {
        name: None,
        ..m.clone()
    };
    serde_json::to_string(&unnamed).unwrap_or_default()
}

/// Reports rules and matches that repeat earlier ones; returns the `(rule, match)` positions
/// that were first seen, which the prefix-overlap check then compares.
fn duplicates(s: &mut Sink, kind: &str, rules: &[Rule]) -> Vec<(usize, usize)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut no_match: Option<usize> = None;
    let mut first_seen = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.{kind}[{i}]");
        let unreachable = |s: &mut Sink, why: String| {
            let msg = format!("{kind} rule {} is never used: {why}", rule.label(i));
            s.warn(
                Code::UnreachableRule,
                &path,
                msg,
                "move the rule above the one that takes its traffic, or remove it",
            );
        };
        if rule.matches.is_empty() {
            if let Some(prev) = no_match {
                unreachable(
                    s,
                    format!(
                        "only the last rule can have no matches, and rule {} has none",
                        rules[prev].label(prev)
                    ),
                );
            }
            no_match = Some(i);
            continue;
        }
        if let Some(prev) = no_match {
            unreachable(
                s,
                format!(
                    "rule {} before it has no matches and takes every request",
                    rules[prev].label(prev)
                ),
            );
            continue;
        }
        let mut repeated = 0;
        for (j, key) in rule.matches.iter().enumerate() {
            match seen.get(key.as_str()) {
                Some(&prev) => {
                    repeated += 1;
                    let msg = format!(
                        "match #{j} of {kind} rule {} is never used: rule {} has the same match",
                        rule.label(i),
                        rules[prev].label(prev)
                    );
                    s.warn(
                        Code::IneffectiveMatch,
                        &format!("{path}.match[{j}]"),
                        msg,
                        "remove the duplicate match or change it",
                    );
                }
                None => {
                    seen.insert(key, i);
                    first_seen.push((i, j));
                }
            }
        }
        if repeated == rule.matches.len() {
            unreachable(s, "every one of its matches is used by an earlier rule".into());
        }
    }
    first_seen
}

/// The fields of a `uri.prefix` match that Istio's overlap check compares.
struct PrefixMatch<'a> {
    rule: usize,
    index: usize,
    prefix: &'a str,
    port: Option<u32>,
    method: String,
    authority: String,
    headers: BTreeMap<&'a str, String>,
    query_params: BTreeMap<&'a str, String>,
    without_headers: BTreeMap<&'a str, String>,
}

/// `exact:v` or `prefix:v`; a regex (or nothing) compares as empty, as in Istio.
fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch { exact: Some(e), .. }) if !e.is_empty() => format!("exact:{e}"),
        Some(StringMatch { prefix: Some(p), .. }) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn value_map(m: &BTreeMap<String, StringMatch>) -> BTreeMap<&str, String> {
    m.iter().map(|(k, v)| (k.as_str(), exact_or_prefix(Some(v)))).collect()
}

impl<'a> PrefixMatch<'a> {
    fn new(rule: usize, index: usize, m: &'a HttpMatchRequest) -> Option<Self> {
        let prefix = m.uri.as_ref()?.prefix.as_deref().filter(|p| !p.is_empty())?;
        let method = match exact_or_prefix(m.method.as_ref()) {
            // Without a method the request is taken to be a GET.
            none if none.is_empty() => "exact:GET".to_string(),
            method => method,
        };
        Some(PrefixMatch {
            rule,
            index,
            prefix,
            port: m.port.filter(|p| *p != 0),
            method,
            authority: exact_or_prefix(m.authority.as_ref()),
            headers: value_map(&m.headers),
            query_params: value_map(&m.query_params),
            without_headers: value_map(&m.without_headers),
        })
    }

    /// Whether this (earlier) match takes every request `later` would.
    fn covers(&self, later: &PrefixMatch) -> bool {
        let wider = |a: &str, b: &str| a == b || a.starts_with(b);
        let same_keys_wider = |a: &BTreeMap<&str, String>, b: &BTreeMap<&str, String>| {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| wider(v, w)))
        };
        later.prefix.starts_with(self.prefix)
            && self.port == later.port
            && wider(&self.method, &later.method)
            && wider(&self.authority, &later.authority)
            && same_keys_wider(&self.headers, &later.headers)
            && same_keys_wider(&self.query_params, &later.query_params)
            && same_keys_wider(&self.without_headers, &later.without_headers)
    }
}

/// IST0131 for a `uri.prefix` match an earlier, shorter prefix match covers (same prefixes are
/// duplicates or differ elsewhere, and are left to the duplicate check).
fn overlapping_prefixes(s: &mut Sink, rules: &[HttpRoute], first_seen: &[(usize, usize)]) {
    let prefixes: Vec<PrefixMatch> = first_seen
        .iter()
        .filter_map(|&(i, j)| PrefixMatch::new(i, j, &rules[i].matches[j]))
        .collect();
    for (a, earlier) in prefixes.iter().enumerate() {
        for later in &prefixes[a + 1..] {
            if later.prefix == earlier.prefix || !earlier.covers(later) {
                continue;
            }
            let rule = |i: usize| label(rules[i].name.as_deref(), i);
            let msg = format!(
                "match #{} (prefix `{}`) of http rule {} is never used: match #{} (prefix `{}`) of rule {} takes its requests first",
                later.index,
                later.prefix,
                rule(later.rule),
                earlier.index,
                earlier.prefix,
                rule(earlier.rule)
            );
            s.warn(
                Code::IneffectiveMatch,
                &format!("spec.http[{}].match[{}]", later.rule, later.index),
                msg,
                "put the longer prefix first, or remove it",
            );
        }
    }
}
