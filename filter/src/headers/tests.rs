//! Tests of [`super`]: exact output per style, and every structured-field value parsed back
//! with `sfv` (RFC 9651) to prove it is the List / Dictionary / Item the draft asks for.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use proptest::prelude::*;
use sfv::{BareItem, Dictionary, Item, List, ListEntry, Parser};

use super::*;

const NOW: u64 = 1_700_000_000;

fn status(
    name: &str,
    limit: u64,
    remaining: u64,
    reset_secs: u64,
    partition: u64,
) -> RuleStatus<'_> {
    RuleStatus {
        name,
        limit,
        remaining,
        reset_secs,
        window_secs: 60,
        partition,
    }
}

/// The two rules of the brief's examples: per-ip 600/min, per-tenant 100/min.
fn two_rules() -> [RuleStatus<'static>; 2] {
    [
        status("per-ip", 600, 599, 1, 0x0123_4567_89ab_cdef),
        status("per-tenant", 100, 99, 1, 42),
    ]
}

fn rendered(style: HeaderStyle, rules: &[RuleStatus<'_>]) -> HeaderList {
    let mut out = HeaderList::new();
    render(style, rules, NOW, &mut out);
    out
}

fn get<'h>(headers: &'h HeaderList, name: &str) -> &'h str {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

fn int(item: &BareItem) -> i64 {
    i64::from(item.as_integer().unwrap())
}

fn item_of(entry: &ListEntry) -> &Item {
    match entry {
        ListEntry::Item(item) => item,
        ListEntry::InnerList(_) => panic!("inner list where an item was expected"),
    }
}

/// Parses a List of sf-string items: `(name, parameters)` per member.
fn parse_list(value: &str) -> Vec<(String, Vec<(String, BareItem)>)> {
    let list: List = Parser::new(value).parse().unwrap();
    list.iter()
        .map(|entry| {
            let item = item_of(entry);
            let name = item.bare_item.as_string().unwrap().as_str().to_owned();
            let params = item
                .params
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect();
            (name, params)
        })
        .collect()
}

fn param<'p>(params: &'p [(String, BareItem)], key: &str) -> &'p BareItem {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn empty_rules_and_style_none_send_nothing() {
    for style in [
        HeaderStyle::Draft6,
        HeaderStyle::Draft7,
        HeaderStyle::Draft8,
        HeaderStyle::Ietf,
        HeaderStyle::Legacy,
    ] {
        assert!(rendered(style, &[]).is_empty(), "{style:?}");
    }
    assert!(rendered(HeaderStyle::None, &two_rules()).is_empty());
}

#[test]
fn render_appends_to_what_is_there() {
    let mut out = vec![("x-other", "1".to_string())];
    render(HeaderStyle::Legacy, &two_rules(), NOW, &mut out);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], ("x-other", "1".to_string()));
}

#[test]
fn most_restrictive_is_lowest_remaining_then_longest_reset() {
    assert_eq!(most_restrictive(&[]), None);
    let rules = [
        status("a", 10, 5, 3, 0),
        status("b", 10, 2, 1, 0),
        status("c", 10, 2, 9, 0),
        status("d", 10, 2, 9, 0),
    ];
    assert_eq!(
        most_restrictive(&rules).unwrap().name,
        "c",
        "tie on remaining → larger reset; then the first"
    );
    assert_eq!(most_restrictive(&rules[..2]).unwrap().name, "b");
}

#[test]
fn draft6_describes_the_most_restrictive_rule() {
    let out = rendered(HeaderStyle::Draft6, &two_rules());
    let names: Vec<_> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "ratelimit-policy"
        ]
    );
    for (name, expected) in [
        ("ratelimit-limit", 100),
        ("ratelimit-remaining", 99),
        ("ratelimit-reset", 1),
    ] {
        let item: Item = Parser::new(get(&out, name)).parse().unwrap();
        assert_eq!(int(&item.bare_item), expected, "{name}");
        assert!(item.params.is_empty());
    }
    assert_eq!(get(&out, "ratelimit-policy"), "100;w=60");
    let policy: List = Parser::new(get(&out, "ratelimit-policy")).parse().unwrap();
    let item = item_of(&policy[0]);
    assert_eq!(
        (policy.len(), int(&item.bare_item), int(&item.params["w"])),
        (1, 100, 60)
    );
}

#[test]
fn draft7_is_one_dictionary_plus_policy() {
    let out = rendered(HeaderStyle::Draft7, &two_rules());
    assert_eq!(out.len(), 2);
    assert_eq!(get(&out, "ratelimit"), "limit=100, remaining=99, reset=1");
    let dict: Dictionary = Parser::new(get(&out, "ratelimit")).parse().unwrap();
    let members: Vec<_> = dict
        .iter()
        .map(|(k, v)| (k.as_str(), int(&item_of(v).bare_item)))
        .collect();
    assert_eq!(members, [("limit", 100), ("remaining", 99), ("reset", 1)]);
    assert_eq!(get(&out, "ratelimit-policy"), "100;w=60");
}

#[test]
fn draft8_lists_every_rule() {
    let out = rendered(HeaderStyle::Draft8, &two_rules());
    assert_eq!(out.len(), 2);
    assert_eq!(
        get(&out, "ratelimit-policy"),
        r#""per-ip";q=600;w=60, "per-tenant";q=100;w=60"#
    );
    assert_eq!(
        get(&out, "ratelimit"),
        r#""per-ip";r=599;t=1, "per-tenant";r=99;t=1"#
    );

    let policies = parse_list(get(&out, "ratelimit-policy"));
    let summary: Vec<_> = policies
        .iter()
        .map(|(n, p)| (n.as_str(), p.len(), int(param(p, "q")), int(param(p, "w"))))
        .collect();
    assert_eq!(
        summary,
        [("per-ip", 2, 600, 60), ("per-tenant", 2, 100, 60)]
    );
    let limits = parse_list(get(&out, "ratelimit"));
    let summary: Vec<_> = limits
        .iter()
        .map(|(n, p)| (n.as_str(), p.len(), int(param(p, "r")), int(param(p, "t"))))
        .collect();
    assert_eq!(summary, [("per-ip", 2, 599, 1), ("per-tenant", 2, 99, 1)]);
}

#[test]
fn ietf_adds_quota_unit_and_partition_key() {
    let out = rendered(HeaderStyle::Ietf, &two_rules());
    assert_eq!(out.len(), 2);
    assert_eq!(
        get(&out, "ratelimit-policy"),
        r#""per-ip";q=600;qu="requests";w=60;pk=:ASNFZ4mrze8=:, "per-tenant";q=100;qu="requests";w=60;pk=:AAAAAAAAACo=:"#
    );
    assert_eq!(
        get(&out, "ratelimit"),
        r#""per-ip";r=599;t=1;pk=:ASNFZ4mrze8=:, "per-tenant";r=99;t=1;pk=:AAAAAAAAACo=:"#
    );

    let policies = parse_list(get(&out, "ratelimit-policy"));
    let limits = parse_list(get(&out, "ratelimit"));
    for (rule, ((name, policy), (limit_name, limit))) in
        two_rules().iter().zip(policies.iter().zip(&limits))
    {
        let pk = rule.partition.to_be_bytes();
        assert_eq!((name.as_str(), limit_name.as_str()), (rule.name, rule.name));
        let keys: Vec<_> = policy.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["q", "qu", "w", "pk"]);
        assert_eq!(int(param(policy, "q")) as u64, rule.limit);
        assert_eq!(
            param(policy, "qu").as_string().unwrap().as_str(),
            "requests"
        );
        assert_eq!(int(param(policy, "w")) as u64, rule.window_secs);
        assert_eq!(param(policy, "pk").as_byte_sequence().unwrap(), pk);
        let keys: Vec<_> = limit.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["r", "t", "pk"]);
        assert_eq!(int(param(limit, "r")) as u64, rule.remaining);
        assert_eq!(int(param(limit, "t")) as u64, rule.reset_secs);
        assert_eq!(param(limit, "pk").as_byte_sequence().unwrap(), pk);
    }
}

#[test]
fn partition_key_is_standard_padded_base64() {
    for (partition, expected) in [
        (0, "AAAAAAAAAAA="),
        (u64::MAX, "//////////8="),
        (0xfbff_bf00_0000_0001, "+/+/AAAAAAE="),
    ] {
        let mut value = String::new();
        push_partition(&mut value, partition);
        assert_eq!(value, format!(";pk=:{expected}:"));
    }
}

#[test]
fn legacy_reset_is_a_unix_timestamp() {
    let rules = [
        status("per-ip", 600, 3, 40, 0),
        status("per-tenant", 100, 3, 12, 0),
    ];
    let out = rendered(HeaderStyle::Legacy, &rules);
    let expected = [
        ("x-ratelimit-limit", "600"),
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-reset", "1700000040"),
    ];
    assert_eq!(
        out.iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    let mut out = HeaderList::new();
    render(HeaderStyle::Legacy, &rules, u64::MAX, &mut out);
    assert_eq!(
        get(&out, "x-ratelimit-reset"),
        SF_INTEGER_MAX.to_string(),
        "saturates, never overflows"
    );
}

#[test]
fn zero_window_omits_w() {
    let rules = [RuleStatus {
        window_secs: 0,
        ..status("x", 5, 4, 1, 0)
    }];
    assert_eq!(
        get(&rendered(HeaderStyle::Draft6, &rules), "ratelimit-policy"),
        "5"
    );
    assert_eq!(
        get(&rendered(HeaderStyle::Draft8, &rules), "ratelimit-policy"),
        r#""x";q=5"#
    );
}

#[test]
fn huge_values_stay_valid_sf_integers() {
    let rules = [RuleStatus {
        window_secs: u64::MAX,
        ..status("big", u64::MAX, u64::MAX, u64::MAX, u64::MAX)
    }];
    for style in [HeaderStyle::Draft6, HeaderStyle::Draft7] {
        for (name, value) in rendered(style, &rules) {
            let parsed = if name == "ratelimit" {
                Parser::new(&value).parse::<Dictionary>().map(|_| ())
            } else {
                Parser::new(&value).parse::<List>().map(|_| ())
            };
            assert!(parsed.is_ok(), "{style:?} {name}: {value}");
        }
    }
    let out = rendered(HeaderStyle::Ietf, &rules);
    let policies = parse_list(get(&out, "ratelimit-policy"));
    assert_eq!(int(param(&policies[0].1, "q")) as u64, SF_INTEGER_MAX);
}

#[test]
fn odd_names_are_escaped_never_injected() {
    let rules = [status("a\"b\\c\r\nset-cookie: x=1é", 1, 0, 1, 0)];
    let out = rendered(HeaderStyle::Draft8, &rules);
    for (_, value) in &out {
        assert!(value.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{value}");
    }
    let policies = parse_list(get(&out, "ratelimit-policy"));
    assert_eq!(policies[0].0, "a\"b\\c__set-cookie: x=1_");
}

proptest! {
    /// Whatever the rules, both list styles parse as RFC 9651 Lists whose members carry the
    /// rule's name and (capped) numbers.
    #[test]
    fn list_styles_always_parse(
        raw in proptest::collection::vec(("[A-Za-z0-9_.-]{1,64}", any::<u64>(), any::<u64>(), any::<u64>(), 1..u64::MAX, any::<u64>()), 1..5),
        ietf in any::<bool>(),
    ) {
        let rules: Vec<_> = raw.iter()
            .map(|(name, limit, remaining, reset_secs, window_secs, partition)| RuleStatus {
                name, limit: *limit, remaining: *remaining, reset_secs: *reset_secs, window_secs: *window_secs, partition: *partition,
            })
            .collect();
        let out = rendered(if ietf { HeaderStyle::Ietf } else { HeaderStyle::Draft8 }, &rules);
        let policies = parse_list(get(&out, "ratelimit-policy"));
        let limits = parse_list(get(&out, "ratelimit"));
        prop_assert_eq!(policies.len(), rules.len());
        for (rule, ((name, policy), (_, limit))) in rules.iter().zip(policies.iter().zip(&limits)) {
            prop_assert_eq!(name.as_str(), rule.name);
            prop_assert_eq!(int(param(policy, "q")) as u64, rule.limit.min(SF_INTEGER_MAX));
            prop_assert_eq!(int(param(policy, "w")) as u64, rule.window_secs.min(SF_INTEGER_MAX));
            prop_assert_eq!(int(param(limit, "r")) as u64, rule.remaining.min(SF_INTEGER_MAX));
            prop_assert_eq!(int(param(limit, "t")) as u64, rule.reset_secs.min(SF_INTEGER_MAX));
            if ietf {
                prop_assert_eq!(param(limit, "pk").as_byte_sequence().unwrap(), rule.partition.to_be_bytes());
            }
        }
    }
}
