//! The policy evaluator against a reference evaluation written from IAM's
//! reference, on random policies and requests. The reference works on the
//! generator's own description of each statement and matches wildcards
//! with regular expressions, so it shares no code with the evaluator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use regex::RegexBuilder;
use shardgate_authz::{Context, Policy, Request, Requester, Verdict};

#[derive(Clone, Debug)]
enum Who {
    Everyone,
    Account,
    User(&'static str),
}

#[derive(Clone, Debug)]
struct Cond {
    op: &'static str,
    prefix: &'static str,
    if_exists: bool,
    key: &'static str,
    values: Vec<&'static str>,
}

#[derive(Clone, Debug)]
struct Stmt {
    allow: bool,
    not_principal: bool,
    principals: Vec<Who>,
    not_action: bool,
    actions: Vec<&'static str>,
    not_resource: bool,
    resources: Vec<&'static str>,
    conditions: Vec<Cond>,
}

const ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:Get*",
    "s3:*",
    "*",
    "S3:getobject",
    "s3:?etObject",
];
const RESOURCES: &[&str] = &[
    "arn:aws:s3:::b/*",
    "arn:aws:s3:::b/x*",
    "arn:aws:s3:::b/x/?",
    "arn:aws:s3:::b/y",
    "arn:aws:s3:::b*",
    "*",
];
const REQUEST_ACTIONS: &[&str] = &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"];
const REQUEST_RESOURCES: &[&str] = &[
    "arn:aws:s3:::b/x/1",
    "arn:aws:s3:::b/y",
    "arn:aws:s3:::b/x/22",
    "arn:aws:s3:::b/z",
];

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Everyone),
        Just(Who::Account),
        Just(Who::User("alice")),
        Just(Who::User("bob")),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    let string_ops = prop_oneof![
        Just("StringEquals"),
        Just("StringNotEquals"),
        Just("StringLike"),
        Just("StringNotLike"),
        Just("StringEqualsIgnoreCase"),
        Just("StringNotEqualsIgnoreCase"),
    ];
    let string_key = prop_oneof![
        Just("s3:prefix"),
        Just("s3:x-amz-acl"),
        Just("s3:ExistingObjectTag/t")
    ];
    let string_values = proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("A"),
            Just("a*"),
            Just("b"),
            Just("public-read"),
            Just("?")
        ],
        1..3,
    );
    let prefix = prop_oneof![Just(""), Just("ForAnyValue:"), Just("ForAllValues:")];
    let strings = (
        string_ops,
        prefix.clone(),
        any::<bool>(),
        string_key,
        string_values,
    )
        .prop_map(|(op, prefix, if_exists, key, values)| Cond {
            op,
            prefix,
            if_exists,
            key,
            values,
        });
    let ips = (
        prop_oneof![Just("IpAddress"), Just("NotIpAddress")],
        prefix,
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![Just("10.0.0.0/8"), Just("192.168.1.7"), Just("::1/128")],
            1..3,
        ),
    )
        .prop_map(|(op, prefix, if_exists, values)| Cond {
            op,
            prefix,
            if_exists,
            key: "aws:SourceIp",
            values,
        });
    let null = (
        prop_oneof![Just("s3:prefix"), Just("aws:SourceIp")],
        any::<bool>(),
    )
        .prop_map(|(key, absent)| Cond {
            op: "Null",
            prefix: "",
            if_exists: false,
            key,
            values: vec![if absent { "true" } else { "false" }],
        });
    prop_oneof![4 => strings, 2 => ips, 1 => null]
}

fn stmt() -> impl Strategy<Value = Stmt> {
    (
        any::<bool>(),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(who(), 1..3),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(proptest::sample::select(ACTIONS), 1..3),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(proptest::sample::select(RESOURCES), 1..3),
        proptest::collection::vec(cond(), 0..3),
    )
        .prop_map(
            |(
                allow,
                not_principal,
                principals,
                not_action,
                actions,
                not_resource,
                resources,
                conditions,
            )| Stmt {
                allow,
                not_principal,
                principals,
                not_action,
                actions,
                not_resource,
                resources,
                conditions,
            },
        )
}

fn json(stmts: &[Stmt]) -> String {
    let quote = |v: &[&str]| serde_json::to_string(v).unwrap();
    let mut out = Vec::new();
    for (i, s) in stmts.iter().enumerate() {
        let mut aws = Vec::new();
        for w in &s.principals {
            aws.push(match w {
                Who::Everyone => "*".to_string(),
                Who::Account => "arn:aws:iam::123456789012:root".to_string(),
                Who::User(n) => format!("arn:aws:iam::123456789012:user/{n}"),
            });
        }
        // Conditions on one operator and key would collide in JSON: the
        // reference sees only the last of each, as the parser does.
        let mut ops: std::collections::BTreeMap<String, std::collections::BTreeMap<&str, String>> =
            Default::default();
        for c in &s.conditions {
            let op = format!(
                "{}{}{}",
                c.prefix,
                c.op,
                if c.if_exists { "IfExists" } else { "" }
            );
            ops.entry(op).or_default().insert(c.key, quote(&c.values));
        }
        let conditions: Vec<String> = ops
            .iter()
            .map(|(op, keys)| {
                let keys: Vec<String> = keys.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                format!("\"{op}\": {{{}}}", keys.join(", "))
            })
            .collect();
        out.push(format!(
            "{{\"Sid\": \"s{i}\", \"Effect\": \"{}\", \"{}Principal\": {{\"AWS\": {}}}, \"{}Action\": {}, \"{}Resource\": {}, \"Condition\": {{{}}}}}",
            if s.allow { "Allow" } else { "Deny" },
            if s.not_principal { "Not" } else { "" },
            serde_json::to_string(&aws).unwrap(),
            if s.not_action { "Not" } else { "" },
            quote(&s.actions),
            if s.not_resource { "Not" } else { "" },
            quote(&s.resources),
            conditions.join(", "),
        ));
    }
    format!(
        "{{\"Version\": \"2012-10-17\", \"Statement\": [{}]}}",
        out.join(", ")
    )
}

/// The last condition written for each (operator, key): what JSON keeps.
fn effective(conditions: &[Cond]) -> Vec<Cond> {
    let mut out: Vec<Cond> = Vec::new();
    for c in conditions {
        out.retain(|o| {
            !(o.op == c.op && o.prefix == c.prefix && o.if_exists == c.if_exists && o.key == c.key)
        });
        out.push(c.clone());
    }
    out
}

fn wildcard(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let mut re = String::from("^");
    for ch in pattern.chars() {
        match ch {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    RegexBuilder::new(&re)
        .case_insensitive(ignore_case)
        .dot_matches_new_line(true)
        .build()
        .unwrap()
        .is_match(value)
}

fn in_net(net: &str, ip: &str) -> bool {
    let ip: std::net::IpAddr = match ip.parse() {
        Ok(ip) => ip,
        Err(_) => return false,
    };
    match net {
        "10.0.0.0/8" => matches!(ip, std::net::IpAddr::V4(v) if v.octets()[0] == 10),
        "192.168.1.7" => ip == "192.168.1.7".parse::<std::net::IpAddr>().unwrap(),
        "::1/128" => ip == "::1".parse::<std::net::IpAddr>().unwrap(),
        _ => unreachable!(),
    }
}

/// IAM's rules for one condition, read off its reference tables.
fn reference_condition(c: &Cond, ctx: &[(&str, Vec<&str>)]) -> bool {
    let values: Option<&Vec<&str>> = ctx
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(c.key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    if c.op == "Null" {
        return values.is_none() == (c.values[0] == "true");
    }
    let negated = c.op.contains("Not");
    let positive_match = |v: &str| -> bool {
        c.values.iter().any(|p| {
            if c.op.starts_with("String") {
                match c.op.replace("Not", "").as_str() {
                    "StringEquals" => *p == v,
                    "StringEqualsIgnoreCase" => p.eq_ignore_ascii_case(v),
                    "StringLike" => wildcard(p, v, false),
                    _ => unreachable!(),
                }
            } else {
                in_net(p, v)
            }
        })
    };
    let one = |v: &str| {
        if negated {
            !positive_match(v)
        } else {
            positive_match(v)
        }
    };
    match (c.prefix, values) {
        ("", None) => c.if_exists || negated,
        ("", Some(vs)) => {
            if negated {
                vs.iter().all(|v| one(v))
            } else {
                vs.iter().any(|v| one(v))
            }
        }
        ("ForAnyValue:", None) => false,
        ("ForAnyValue:", Some(vs)) => vs.iter().any(|v| one(v)),
        ("ForAllValues:", None) => true,
        ("ForAllValues:", Some(vs)) => vs.iter().all(|v| one(v)),
        _ => unreachable!(),
    }
}

fn reference(
    stmts: &[Stmt],
    requester: &Requester,
    action: &str,
    resource: &str,
    ctx: &[(&str, Vec<&str>)],
) -> Verdict {
    let named = |w: &Who| match (w, requester) {
        (Who::Everyone, _) => true,
        (_, Requester::Anonymous) => false,
        (Who::Account, _) => true,
        (Who::User(n), Requester::User { name, .. }) => n == name,
        (Who::User(_), _) => false,
    };
    let mut allowed = false;
    for s in stmts {
        let p = s.principals.iter().any(named) != s.not_principal;
        let a = s.actions.iter().any(|x| wildcard(x, action, true)) != s.not_action;
        let r = s.resources.iter().any(|x| wildcard(x, resource, false)) != s.not_resource;
        let c = effective(&s.conditions)
            .iter()
            .all(|c| reference_condition(c, ctx));
        if p && a && r && c {
            if !s.allow {
                return Verdict::Deny;
            }
            allowed = true;
        }
    }
    if allowed {
        Verdict::Allow
    } else {
        Verdict::Silent
    }
}

fn requester() -> impl Strategy<Value = Requester> {
    prop_oneof![
        Just(Requester::Anonymous),
        Just(Requester::User {
            name: "alice".into(),
            canonical_id: "a".repeat(64)
        }),
        Just(Requester::User {
            name: "carol".into(),
            canonical_id: "c".repeat(64)
        }),
        Just(Requester::Admin {
            canonical_id: "0".repeat(64)
        }),
    ]
}

type Ctx = Vec<(&'static str, Vec<&'static str>)>;

fn context() -> impl Strategy<Value = Ctx> {
    let key = prop_oneof![
        Just("s3:prefix"),
        Just("s3:x-amz-acl"),
        Just("s3:ExistingObjectTag/t"),
        Just("aws:SourceIp")
    ];
    let value = prop_oneof![
        Just("a"),
        Just("A"),
        Just("ab"),
        Just("b"),
        Just("public-read"),
        Just("10.1.2.3"),
        Just("192.168.1.7"),
        Just("::1")
    ];
    proptest::collection::vec((key, proptest::collection::vec(value, 0..3)), 0..4).prop_map(
        |mut kv| {
            kv.sort_by_key(|(k, _)| *k);
            kv.dedup_by_key(|(k, _)| *k);
            kv
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

    #[test]
    fn the_evaluator_agrees_with_the_reference(
        stmts in proptest::collection::vec(stmt(), 1..4),
        requester in requester(),
        action in proptest::sample::select(REQUEST_ACTIONS),
        resource in proptest::sample::select(REQUEST_RESOURCES),
        ctx in context(),
    ) {
        let text = json(&stmts);
        let policy = Policy::parse(&text, "b").map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        let mut context = Context::default();
        for (k, vs) in &ctx {
            for v in vs {
                context.insert(k, *v);
            }
        }
        let got = policy.evaluate(&Request { requester: &requester, action, resource, context: &context });
        let want = reference(&stmts, &requester, action, resource, &ctx);
        prop_assert_eq!(got, want, "policy {} context {:?}", text, ctx);
    }
}
