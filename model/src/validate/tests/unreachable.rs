//! Unreachable rules and ineffective matches (IST0130, IST0131), as Istio's
//! `analyzeUnreachableHTTPRules` finds them.

use super::*;

/// The IST0131 messages of a VirtualService whose two http rules are `first` then `second`, each
/// a match and a route.
fn ineffective(first: &str, second: &str) -> Vec<String> {
    let spec = format!("{{hosts: [a.example.com], http: [{{{first}, {ROUTE}}}, {{{second}, {ROUTE}}}]}}");
    check(&doc("VirtualService", &spec))
        .into_iter()
        .filter(|d| d.code == Code::IneffectiveMatch)
        .map(|d| d.message)
        .collect()
}

/// `code field` of each IST0130 and IST0131 finding of a VirtualService with http `rules`.
fn findings(rules: &str) -> Vec<String> {
    let spec = format!("{{hosts: [a.example.com], gateways: [gw], http: [{rules}]}}");
    check(&doc("VirtualService", &spec))
        .into_iter()
        .filter(|d| matches!(d.code, Code::UnreachableRule | Code::IneffectiveMatch))
        .map(|d| format!("{} {}", d.code, d.field.unwrap_or_default()))
        .collect()
}

#[test]
fn matches_that_differ_are_neither_unreachable_nor_ineffective() {
    let pair = |first: &str, later: &str| format!("{{match: [{first}], {ROUTE}}}, {{match: [{later}], {ROUTE}}}");
    for (first, later) in [
        ("{uri: {exact: /a}}", "{uri: {exact: /b}}"),
        ("{uri: {prefix: /a}, method: {exact: POST}}", "{uri: {prefix: /a/b}}"),
        (
            "{uri: {prefix: /a}, authority: {exact: x.example.com}}",
            "{uri: {prefix: /a/b}, authority: {exact: y.example.com}}",
        ),
        (
            "{uri: {prefix: /a}, headers: {x-a: {exact: '1'}}}",
            "{uri: {prefix: /a/b}, headers: {x-b: {exact: '2'}}}",
        ),
        (
            "{uri: {prefix: /a}, queryParams: {q: {exact: '1'}}}",
            "{uri: {prefix: /a/b}, queryParams: {q: {exact: '2'}}}",
        ),
        (
            "{uri: {prefix: /a}, withoutHeaders: {x-a: {exact: '1'}}}",
            "{uri: {prefix: /a/b}, withoutHeaders: {x-a: {exact: '2'}}}",
        ),
        ("{uri: {prefix: /a}, port: 80}", "{uri: {prefix: /a/b}, port: 8080}"),
        (
            "{uri: {prefix: /a}, headers: {x-a: {prefix: '1'}}}",
            "{uri: {prefix: /a/b}, headers: {x-a: {prefix: '2'}}}",
        ),
    ] {
        assert_eq!(
            findings(&pair(first, later)),
            Vec::<String>::new(),
            "{first} then {later}"
        );
    }
    // The same later match, with nothing to tell it apart, is taken by the earlier one.
    let wider =
        "{uri: {prefix: /a}, method: {exact: POST}, headers: {x-a: {exact: '1'}}, queryParams: {q: {exact: '1'}}}";
    let narrower =
        "{uri: {prefix: /a/b}, method: {exact: POST}, headers: {x-a: {exact: '1'}}, queryParams: {q: {exact: '1'}}}";
    assert_eq!(findings(&pair(wider, narrower)), ["IST0131 spec.http[1].match[0]"]);
    // Istio's coveredValidation takes an earlier value that begins with the later one's as
    // covering it, so an earlier authority covers a later match with none.
    let with_authority = "{uri: {prefix: /a}, authority: {exact: x.example.com}}";
    assert_eq!(
        findings(&pair(with_authority, "{uri: {prefix: /a/b}}")),
        ["IST0131 spec.http[1].match[0]"]
    );
}

#[test]
fn an_empty_exact_is_no_constraint_and_rules_go_by_name_or_number() {
    // An empty `exact` method is none at all (a GET, as the later match's): the prefix /a takes
    // /a/b first. Rules without names (or with an empty one) go by number.
    let found = ineffective(
        "name: '', match: [{uri: {prefix: /a}, method: {exact: ''}}]",
        "match: [{uri: {prefix: /a/b}}]",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("of http rule #1") && found[0].contains("of rule #0"),
        "{}",
        found[0]
    );
    // An empty prefix is no constraint either (Istio's assignExactOrPrefix): /a takes /a/b first.
    let found = ineffective(
        "match: [{uri: {prefix: /a}}]",
        "match: [{uri: {prefix: /a/b}, authority: {prefix: ''}}]",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    let found = ineffective(
        "name: catch-all, match: [{uri: {prefix: /a}}]",
        "name: deeper, match: [{uri: {prefix: /a/b}}]",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("of http rule `deeper`") && found[0].contains("of rule `catch-all`"),
        "{}",
        found[0]
    );
}

#[test]
fn a_rule_after_a_catch_all_is_named_in_its_warning() {
    let spec = format!(
        "{{hosts: [a.example.com], http: [{{{ROUTE}}}, {{name: late, match: [{{uri: {{prefix: /x}}}}], {ROUTE}}}]}}"
    );
    let found: Vec<_> = check(&doc("VirtualService", &spec))
        .into_iter()
        .filter(|d| d.code == Code::UnreachableRule)
        .map(|d| d.message)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("http rule `late` is never used"), "{}", found[0]);
}

#[test]
fn a_rule_is_unreachable_when_every_one_of_its_matches_came_before() {
    let rules = format!(
        "{{match: [{{uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}], {ROUTE}}}, \
         {{match: [{{uri: {{exact: /b}}}}, {{uri: {{exact: /a}}}}], {ROUTE}}}, \
         {{match: [{{uri: {{exact: /a}}}}, {{uri: {{exact: /c}}}}], {ROUTE}}}"
    );
    assert_eq!(
        findings(&rules),
        [
            "IST0131 spec.http[1].match[0]",
            "IST0131 spec.http[1].match[1]",
            "IST0130 spec.http[1]",
            "IST0131 spec.http[2].match[0]",
        ]
    );
}
