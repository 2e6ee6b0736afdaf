//! Bucket policies: the IAM grammar S3 accepts on a bucket, parsed and
//! checked once when the policy is set, then evaluated per request.
//!
//! A statement applies to a request when its principal, action and
//! resource match and its conditions hold. An applying Deny decides;
//! otherwise an applying Allow allows; otherwise the policy says nothing
//! and the ACLs and ownership decide ([`crate::authorize`]).

use serde_json::Value as Json;
use wildmatch::WildMatch;

use crate::condition::{Condition, Op, Value};
use crate::{Context, Requester, action};

/// S3 refuses bucket policies larger than this.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// Why a policy was refused (S3: MalformedPolicy), in S3's words where it
/// has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyError {
    pub(crate) fn new(what: impl Into<String>) -> Self {
        PolicyError(what.into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// What a policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// No statement applies.
    Silent,
}

/// A statement's element, or its `Not...` form.
#[derive(Clone, Debug)]
pub enum Match<T> {
    Is(T),
    Not(T),
}

impl<T> Match<T> {
    fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Match<U>, E> {
        Ok(match self {
            Match::Is(v) => Match::Is(f(v)?),
            Match::Not(v) => Match::Not(f(v)?),
        })
    }
}

/// Who a statement names.
#[derive(Clone, Debug, Default)]
pub struct Principals {
    /// `"*"` or `{"AWS": "*"}`: everyone, signed or not.
    pub everyone: bool,
    /// An account (`arn:aws:iam::ACCOUNT:root` or a bare account id):
    /// every signed requester of this gateway, which is one account.
    pub account: bool,
    /// Users by name (`arn:aws:iam::ACCOUNT:user/NAME`).
    pub users: Vec<String>,
    /// Users by canonical id (`{"CanonicalUser": "..."}`).
    pub canonical: Vec<String>,
}

impl Principals {
    fn contains(&self, requester: &Requester) -> bool {
        if self.everyone {
            return true;
        }
        match requester {
            Requester::Anonymous => false,
            Requester::Admin { canonical_id } => {
                self.account || self.canonical.iter().any(|c| c == canonical_id)
            }
            Requester::User { name, canonical_id } => {
                self.account
                    || self.users.iter().any(|u| u == name)
                    || self.canonical.iter().any(|c| c == canonical_id)
            }
        }
    }
}

/// An action or resource pattern (`*` and `?` wildcards; a resource may
/// hold policy variables such as `${aws:username}`).
#[derive(Clone, Debug)]
pub struct Pattern {
    pub text: String,
    compiled: Option<WildMatch>,
}

impl Pattern {
    fn action(text: &str) -> Self {
        Pattern {
            text: text.to_string(),
            compiled: Some(WildMatch::new_case_insensitive(text)),
        }
    }

    fn resource(text: &str) -> Self {
        let compiled = (!text.contains("${")).then(|| WildMatch::new(text));
        Pattern {
            text: text.to_string(),
            compiled,
        }
    }

    fn matches(&self, value: &str, context: &Context) -> bool {
        match &self.compiled {
            Some(m) => m.matches(value),
            None => like(&self.text, value, context),
        }
    }
}

/// One element of a pattern with variables: what a variable's value or
/// `${*}` put there is literal, never a wildcard.
enum Tok {
    Any,
    One,
    Lit(char),
}

/// `value` against a wildcard pattern holding policy variables.
pub(crate) fn like(pattern: &str, value: &str, context: &Context) -> bool {
    let Some(tokens) = tokenize(pattern, context) else {
        return false;
    };
    glob(&tokens, &value.chars().collect::<Vec<_>>())
}

fn tokenize(text: &str, context: &Context) -> Option<Vec<Tok>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    loop {
        let (plain, after) = match rest.find("${") {
            Some(start) => (&rest[..start], Some(&rest[start + 2..])),
            None => (rest, None),
        };
        out.extend(plain.chars().map(|c| match c {
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        }));
        let Some(after) = after else {
            return Some(out);
        };
        let end = after.find('}')?;
        let literal = match &after[..end] {
            name @ ("*" | "?" | "$") => name.to_string(),
            key => context.get(key)?.first()?.clone(),
        };
        out.extend(literal.chars().map(Tok::Lit));
        rest = &after[end + 1..];
    }
}

/// Wildcard matching, backtracking to the last `*`.
fn glob(p: &[Tok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Tok::One) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Lit(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| matches!(t, Tok::Any))
}

/// Replaces the policy variables `${key}` in `text` from the context
/// (`${*}`, `${?}` and `${$}` stand for the characters themselves). `None`
/// when a variable's key is absent: the element then matches nothing.
pub(crate) fn substitute(text: &str, context: &Context) -> Option<String> {
    if !text.contains("${") {
        return Some(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let name = &after[..end];
        match name {
            "*" | "?" | "$" => out.push_str(name),
            key => out.push_str(context.get(key)?.first()?),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[derive(Clone, Debug)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Match<Principals>,
    pub action: Match<Vec<Pattern>>,
    pub resource: Match<Vec<Pattern>>,
    pub conditions: Vec<Condition>,
}

impl Statement {
    /// Whether the statement applies to `request`.
    pub fn applies(&self, request: &Request<'_>) -> bool {
        let principal = match &self.principal {
            Match::Is(p) => p.contains(request.requester),
            Match::Not(p) => !p.contains(request.requester),
        };
        principal
            && matches_any(&self.action, request.action, request.context)
            && matches_any(&self.resource, request.resource, request.context)
            && self.conditions.iter().all(|c| c.holds(request.context))
    }

    /// Whether it allows everyone (S3's "public" test): an Allow to `*`
    /// (or a `NotPrincipal`) that no condition narrows to known sources.
    fn is_public(&self) -> bool {
        let to_everyone = match &self.principal {
            Match::Is(p) => p.everyone,
            Match::Not(_) => true,
        };
        self.effect == Effect::Allow && to_everyone && !self.conditions.iter().any(narrows)
    }
}

/// A condition that keeps a statement from being public: a fixed value of
/// a key that names the caller's network or account.
fn narrows(c: &Condition) -> bool {
    const FIXING: &[&str] = &[
        "aws:sourceip",
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:sourcearn",
        "aws:sourceaccount",
        "aws:sourceowner",
        "aws:principalaccount",
        "aws:principalarn",
        "aws:principalorgid",
        "aws:userid",
        "aws:username",
        "s3:datadelegatedaccess",
    ];
    if c.set != crate::condition::Set::Single || c.if_exists {
        return false;
    }
    if !FIXING.contains(&c.key.to_ascii_lowercase().as_str()) {
        return false;
    }
    match c.op {
        Op::StringEquals | Op::StringEqualsIgnoreCase | Op::ArnEquals => true,
        Op::StringLike | Op::ArnLike => c
            .values
            .iter()
            .all(|v| matches!(v, Value::Text(t) if !t.contains('*') && !t.contains('?'))),
        // A block of at least /8 (IPv4) or /32 (IPv6) counts as fixed.
        Op::IpAddress => c.values.iter().all(|v| match v {
            Value::Net(ipnet::IpNet::V4(n)) => n.prefix_len() >= 8,
            Value::Net(ipnet::IpNet::V6(n)) => n.prefix_len() >= 32,
            _ => false,
        }),
        _ => false,
    }
}

fn matches_any(element: &Match<Vec<Pattern>>, value: &str, context: &Context) -> bool {
    match element {
        Match::Is(ps) => ps.iter().any(|p| p.matches(value, context)),
        Match::Not(ps) => !ps.iter().any(|p| p.matches(value, context)),
    }
}

/// One request as a policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub requester: &'a Requester,
    /// `s3:GetObject`, ...
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// A parsed, checked bucket policy; keeps its text to answer
/// GetBucketPolicy with what was set.
#[derive(Clone, Debug)]
pub struct Policy {
    pub text: String,
    pub statements: Vec<Statement>,
}

impl Policy {
    /// Parses and checks `text` as the policy of `bucket`, as S3 does on
    /// PutBucketPolicy.
    pub fn parse(text: &str, bucket: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::new(format!(
                "Policies must be at most {MAX_POLICY_BYTES} bytes"
            )));
        }
        let json: Json = serde_json::from_str(text)
            .map_err(|e| PolicyError::new(format!("This policy contains invalid Json: {e}")))?;
        let Json::Object(doc) = json else {
            return Err(PolicyError::new("A policy is a JSON object"));
        };
        for key in doc.keys() {
            if !["Version", "Id", "Statement"].contains(&key.as_str()) {
                return Err(PolicyError::new(format!("Unknown field {key}")));
            }
        }
        match doc.get("Version") {
            None => {}
            Some(Json::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(_) => {
                return Err(PolicyError::new(
                    "The policy's Version is not 2012-10-17 or 2008-10-17",
                ));
            }
        }
        let statements = match doc.get("Statement") {
            Some(Json::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Json::Object(_)) => vec![one],
            _ => return Err(PolicyError::new("Missing required field Statement")),
        };
        let statements = statements
            .into_iter()
            .map(|s| statement(s, bucket))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sids: Vec<&str> = statements.iter().filter_map(|s| s.sid.as_deref()).collect();
        sids.sort_unstable();
        if sids.windows(2).any(|w| w[0] == w[1]) {
            return Err(PolicyError::new("Statement IDs (SID) must be unique"));
        }
        Ok(Policy {
            text: text.to_string(),
            statements,
        })
    }

    /// What the policy says about `request`: an applying Deny wins.
    pub fn evaluate(&self, request: &Request<'_>) -> Verdict {
        let mut verdict = Verdict::Silent;
        for s in &self.statements {
            if s.applies(request) {
                match s.effect {
                    Effect::Deny => return Verdict::Deny,
                    Effect::Allow => verdict = Verdict::Allow,
                }
            }
        }
        verdict
    }

    /// Whether a condition tests a key that starts with `prefix` (without
    /// case): the access check reads an object's tags only for a policy
    /// that tests `s3:ExistingObjectTag/...`.
    pub fn tests_key(&self, prefix: &str) -> bool {
        let prefix = prefix.to_ascii_lowercase();
        self.statements.iter().any(|s| {
            s.conditions
                .iter()
                .any(|c| c.key.to_ascii_lowercase().starts_with(&prefix))
        })
    }

    /// S3's GetBucketPolicyStatus: whether any statement allows everyone.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(Statement::is_public)
    }
}

/// One or many strings (JSON allows either wherever IAM lists values).
fn strings(v: &Json, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Json| match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        _ => Err(PolicyError::new(format!(
            "{what} must be a string or a list of strings"
        ))),
    };
    match v {
        Json::Array(list) if !list.is_empty() => list.iter().map(one).collect(),
        Json::Array(_) => Err(PolicyError::new(format!("{what} is empty"))),
        other => Ok(vec![one(other)?]),
    }
}

/// The element `name` or `Not` + `name`, exactly one of them.
fn either<'a>(
    s: &'a serde_json::Map<String, Json>,
    name: &str,
) -> Result<Match<&'a Json>, PolicyError> {
    let not = format!("Not{name}");
    match (s.get(name), s.get(&not)) {
        (Some(v), None) => Ok(Match::Is(v)),
        (None, Some(v)) => Ok(Match::Not(v)),
        (Some(_), Some(_)) => Err(PolicyError::new(format!(
            "A statement cannot have both {name} and {not}"
        ))),
        (None, None) => Err(PolicyError::new(format!("Missing required field {name}"))),
    }
}

fn statement(json: &Json, bucket: &str) -> Result<Statement, PolicyError> {
    let Json::Object(s) = json else {
        return Err(PolicyError::new("A statement is a JSON object"));
    };
    const FIELDS: &[&str] = &[
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    if let Some(k) = s.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(PolicyError::new(format!("Unknown field {k}")));
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Json::String(v)) => Some(v.clone()),
        Some(_) => return Err(PolicyError::new("Sid must be a string")),
    };
    let effect = match s.get("Effect") {
        Some(Json::String(e)) if e == "Allow" => Effect::Allow,
        Some(Json::String(e)) if e == "Deny" => Effect::Deny,
        Some(_) => return Err(PolicyError::new("Invalid effect: it is Allow or Deny")),
        None => return Err(PolicyError::new("Missing required field Effect")),
    };
    let principal = either(s, "Principal")?.try_map(principals)?;
    let actions = |v: &Json| -> Result<Vec<Pattern>, PolicyError> {
        strings(v, "Action")?
            .iter()
            .map(|a| {
                let s3 = a.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("s3:"));
                let known = a == "*"
                    || (s3
                        && a.len() > 3
                        && (a.contains(['*', '?']) || action::lookup(a).is_some()));
                if known {
                    Ok(Pattern::action(a))
                } else {
                    Err(PolicyError::new(format!("Policy has invalid action: {a}")))
                }
            })
            .collect()
    };
    let action = either(s, "Action")?.try_map(actions)?;
    let resources = |v: &Json| -> Result<Vec<Pattern>, PolicyError> {
        strings(v, "Resource")?
            .iter()
            .map(|r| {
                let named = r.strip_prefix("arn:aws:s3:::").map(|rest| {
                    let b = rest.split('/').next().unwrap_or_default();
                    b.contains("${") || WildMatch::new(b).matches(bucket)
                });
                match (r.as_str(), named) {
                    ("*", _) | (_, Some(true)) => Ok(Pattern::resource(r)),
                    _ => Err(PolicyError::new(format!(
                        "Policy has invalid resource: {r}"
                    ))),
                }
            })
            .collect()
    };
    let resource = either(s, "Resource")?.try_map(resources)?;
    if let (Match::Is(actions), Match::Is(resources)) = (&action, &resource) {
        check_fit(actions, resources)?;
    }
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(Json::Object(ops)) => {
            let mut out = Vec::new();
            for (op, keys) in ops {
                let Json::Object(keys) = keys else {
                    return Err(PolicyError::new(format!("Condition {op} is not an object")));
                };
                for (key, values) in keys {
                    out.push(Condition::parse(
                        op,
                        key,
                        strings(values, "A condition value")?,
                    )?);
                }
            }
            out
        }
        Some(_) => return Err(PolicyError::new("Condition is not an object")),
    };
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

/// S3's "Action does not apply to any resource(s) in statement": a named
/// object action needs an object resource, a bucket action a bucket one.
fn check_fit(actions: &[Pattern], resources: &[Pattern]) -> Result<(), PolicyError> {
    let objects = resources.iter().any(|r| r.text.contains(['/', '*']));
    let buckets = resources.iter().any(|r| !r.text.contains('/'));
    for a in actions {
        let Some(known) = action::lookup(&a.text) else {
            continue;
        };
        let fits = match known.kind {
            action::Kind::Object => objects,
            action::Kind::Bucket => buckets,
        };
        if !fits {
            return Err(PolicyError::new(format!(
                "Action does not apply to any resource(s) in statement: {}",
                a.text
            )));
        }
    }
    Ok(())
}

fn principals(v: &Json) -> Result<Principals, PolicyError> {
    let invalid = |p: &str| PolicyError::new(format!("Invalid principal in policy: {p}"));
    let mut out = Principals::default();
    match v {
        Json::String(s) if s == "*" => out.everyone = true,
        Json::Object(map) if !map.is_empty() => {
            for (kind, values) in map {
                for p in strings(values, "Principal")? {
                    match kind.as_str() {
                        "AWS" => aws_principal(&p, &mut out).ok_or_else(|| invalid(&p))?,
                        "CanonicalUser"
                            if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) =>
                        {
                            out.canonical.push(p.to_ascii_lowercase());
                        }
                        _ => return Err(invalid(&p)),
                    }
                }
            }
        }
        other => return Err(invalid(&other.to_string())),
    }
    Ok(out)
}

/// One `"AWS"` principal: `*`, an account (id or root ARN) or a user ARN.
fn aws_principal(p: &str, out: &mut Principals) -> Option<()> {
    let account = |a: &str| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit());
    if p == "*" {
        out.everyone = true;
    } else if account(p) {
        out.account = true;
    } else {
        let rest = p.strip_prefix("arn:aws:iam::")?;
        let (acct, what) = rest.split_once(':')?;
        if !account(acct) {
            return None;
        }
        if what == "root" {
            out.account = true;
        } else {
            let path = what.strip_prefix("user/")?;
            let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
            if name.contains(['*', '?']) {
                return None;
            }
            out.users.push(name.to_string());
        }
    }
    Some(())
}
