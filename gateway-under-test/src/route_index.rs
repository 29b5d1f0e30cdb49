//! Which of a virtual host's routes a request may take, told by the exact header values the
//! routes require. Istio's route tables tell routes apart by a header (`x-route: r7`, a tenant, a
//! version): rather than try every route in turn, a request looks up its value of each such header
//! once and tries only the routes that ask for that value, with the routes that ask for none, in
//! the table's order. The first of them that matches is the route the scan in order finds: every
//! route left out requires a value the request does not carry.

use http::{HeaderName, Request};

use crate::compile::{CompiledRoute, Map, StrMatch, VirtualHost};
use crate::context::Downstream;
use crate::matching::{matches, Seen};

/// A table with fewer routes that require a value is scanned in order: the index's list of
/// candidates (an allocation and a sort) costs more than a few header compares.
const INDEXED_FROM: usize = 4;

#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Per header name, the routes (their positions, ascending) that require each exact value.
    keyed: Vec<(HeaderName, Map<String, Vec<usize>>)>,
    /// The routes that require no value: candidates for every request.
    open: Vec<usize>,
}

/// The header and exact value a route's match cannot do without, if any: the first header
/// condition that is an exact value, neither inverted nor met by an absent header.
fn required(route: &CompiledRoute) -> Option<(&HeaderName, &str)> {
    route.matcher.headers.iter().find_map(|h| match (&h.key, &h.value) {
        (Some(key), Some(StrMatch::Exact(value))) if !h.invert && !h.treat_missing_as_empty => {
            Some((key, value.as_str()))
        }
        _ => None,
    })
}

impl RouteIndex {
    /// The index of a virtual host's routes (named `of`, not `new`, so cargo-mutants mutates it).
    pub fn of(routes: &[CompiledRoute]) -> RouteIndex {
        let mut index = RouteIndex::default();
        let required: Vec<_> = routes.iter().map(required).collect();
        if required.iter().flatten().count() < INDEXED_FROM {
            return index;
        }
        for (i, required) in required.into_iter().enumerate() {
            let Some((key, value)) = required else {
                index.open.push(i);
                continue;
            };
            let slot = match index.keyed.iter().position(|(k, _)| k == key) {
                Some(slot) => slot,
                None => {
                    index.keyed.push((key.clone(), Map::default()));
                    index.keyed.len() - 1
                }
            };
            index.keyed[slot].1.entry(value.to_string()).or_default().push(i);
        }
        index
    }

    /// The positions, ascending, of the routes the request may take; none when the table is not
    /// indexed (every route may).
    pub fn candidates<'a, B>(&'a self, req: &'a Request<B>, seen: &mut Seen<'a>) -> Option<Vec<usize>> {
        if self.keyed.is_empty() {
            return None;
        }
        let mut candidates = self.open.clone();
        for (key, values) in &self.keyed {
            if let Some(routes) = seen.value(req, key).and_then(|v| values.get(v)) {
                candidates.extend_from_slice(routes);
            }
        }
        candidates.sort_unstable();
        Some(candidates)
    }
}

/// Phase 2's choice: the first of the virtual host's routes whose match takes the request.
pub fn pick<'v, B>(vhost: &'v VirtualHost, req: &Request<B>, down: &Downstream) -> Option<&'v CompiledRoute> {
    let mut seen = Seen::default();
    let candidates = vhost.index.candidates(req, &mut seen);
    let takes = |r: &&'v CompiledRoute| matches(&r.matcher, req, down, &mut seen);
    match candidates {
        None => vhost.routes.iter().find(takes),
        Some(candidates) => candidates.into_iter().map(|i| &vhost.routes[i]).find(takes),
    }
}

#[cfg(test)]
mod tests;
