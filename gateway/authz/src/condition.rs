//! A statement's `Condition` block: operators over request-context keys.
//!
//! The rules, from IAM's reference: every operator of a block and every
//! key of an operator must hold (AND); the values listed for one key are
//! alternatives (OR). A positive operator fails when the key is absent
//! (unless `...IfExists`); a negated one (`StringNotEquals`,
//! `NotIpAddress`, ...) holds when the key is absent, and otherwise when
//! the request's value matches none of the listed ones. `ForAnyValue:`
//! needs some request value to match (and fails on an absent key);
//! `ForAllValues:` needs every request value to match (and holds on an
//! absent key). `Null` tests presence.

use std::net::IpAddr;

use ipnet::IpNet;
use wildmatch::WildMatch;

use crate::Context;
use crate::policy::{PolicyError, like, substitute};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Null,
}

const OPS: &[(&str, Op)] = &[
    ("StringEquals", Op::StringEquals),
    ("StringNotEquals", Op::StringNotEquals),
    ("StringEqualsIgnoreCase", Op::StringEqualsIgnoreCase),
    ("StringNotEqualsIgnoreCase", Op::StringNotEqualsIgnoreCase),
    ("StringLike", Op::StringLike),
    ("StringNotLike", Op::StringNotLike),
    ("NumericEquals", Op::NumericEquals),
    ("NumericNotEquals", Op::NumericNotEquals),
    ("NumericLessThan", Op::NumericLessThan),
    ("NumericLessThanEquals", Op::NumericLessThanEquals),
    ("NumericGreaterThan", Op::NumericGreaterThan),
    ("NumericGreaterThanEquals", Op::NumericGreaterThanEquals),
    ("DateEquals", Op::DateEquals),
    ("DateNotEquals", Op::DateNotEquals),
    ("DateLessThan", Op::DateLessThan),
    ("DateLessThanEquals", Op::DateLessThanEquals),
    ("DateGreaterThan", Op::DateGreaterThan),
    ("DateGreaterThanEquals", Op::DateGreaterThanEquals),
    ("Bool", Op::Bool),
    ("BinaryEquals", Op::BinaryEquals),
    ("IpAddress", Op::IpAddress),
    ("NotIpAddress", Op::NotIpAddress),
    ("ArnEquals", Op::ArnEquals),
    ("ArnNotEquals", Op::ArnNotEquals),
    ("ArnLike", Op::ArnLike),
    ("ArnNotLike", Op::ArnNotLike),
    ("Null", Op::Null),
];

impl Op {
    /// Negated operators hold on an absent key and on a value matching
    /// none of the listed ones.
    pub fn negated(self) -> bool {
        matches!(
            self,
            Op::StringNotEquals
                | Op::StringNotEqualsIgnoreCase
                | Op::StringNotLike
                | Op::NumericNotEquals
                | Op::DateNotEquals
                | Op::NotIpAddress
                | Op::ArnNotEquals
                | Op::ArnNotLike
        )
    }

    pub fn name(self) -> &'static str {
        OPS.iter().find(|(_, o)| *o == self).map_or("", |(n, _)| n)
    }
}

/// How a condition treats a key with several values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// A single-valued key (any of its values, should it have several).
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One key's test: `"Op": { "key": [values] }`.
#[derive(Clone, Debug)]
pub struct Condition {
    pub op: Op,
    pub set: Set,
    pub if_exists: bool,
    /// The key as written.
    pub key: String,
    pub values: Vec<Value>,
}

/// A listed value, parsed for its operator once, when the policy is set.
#[derive(Clone, Debug)]
pub enum Value {
    Text(String),
    Number(f64),
    /// Seconds since the Unix epoch.
    Date(f64),
    Net(IpNet),
    Bool(bool),
}

impl Condition {
    /// Parses `"Op[IfExists]"` with a prefix, for `key` and its listed
    /// values (strings, numbers or booleans in the JSON).
    pub fn parse(op_name: &str, key: &str, raw: Vec<String>) -> Result<Self, PolicyError> {
        let invalid = |what: String| PolicyError::new(what);
        let (set, rest) = if let Some(r) = op_name.strip_prefix("ForAnyValue:") {
            (Set::ForAnyValue, r)
        } else if let Some(r) = op_name.strip_prefix("ForAllValues:") {
            (Set::ForAllValues, r)
        } else {
            (Set::Single, op_name)
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let op = OPS
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, o)| *o)
            .ok_or_else(|| invalid(format!("Invalid Condition type: {op_name}")))?;
        if op == Op::Null && (if_exists || set != Set::Single) {
            return Err(invalid(format!("Invalid Condition type: {op_name}")));
        }
        let lower = key.to_ascii_lowercase();
        if !(lower.starts_with("aws:") || lower.starts_with("s3:")) || key.len() > 256 {
            return Err(invalid(format!(
                "Policy has an invalid condition key: {key}"
            )));
        }
        if raw.is_empty() {
            return Err(invalid(format!(
                "Condition {op_name} on {key} lists no value"
            )));
        }
        let bad = |v: &str| {
            invalid(format!(
                "Invalid value {v:?} for condition {op_name} on {key}"
            ))
        };
        let values = raw
            .into_iter()
            .map(|v| {
                Ok(match op {
                    Op::NumericEquals
                    | Op::NumericNotEquals
                    | Op::NumericLessThan
                    | Op::NumericLessThanEquals
                    | Op::NumericGreaterThan
                    | Op::NumericGreaterThanEquals => {
                        Value::Number(v.trim().parse().map_err(|_| bad(&v))?)
                    }
                    Op::DateEquals
                    | Op::DateNotEquals
                    | Op::DateLessThan
                    | Op::DateLessThanEquals
                    | Op::DateGreaterThan
                    | Op::DateGreaterThanEquals => Value::Date(date(&v).ok_or_else(|| bad(&v))?),
                    Op::IpAddress | Op::NotIpAddress => Value::Net(net(&v).ok_or_else(|| bad(&v))?),
                    Op::Bool | Op::Null => Value::Bool(match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(&v)),
                    }),
                    _ => Value::Text(v),
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(Condition {
            op,
            set,
            if_exists,
            key: key.to_string(),
            values,
        })
    }

    /// Whether the condition holds for a request with `context`.
    pub fn holds(&self, context: &Context) -> bool {
        let present = context.get(&self.key).filter(|v| !v.is_empty());
        if self.op == Op::Null {
            let wants_absent = matches!(self.values.first(), Some(Value::Bool(true)));
            return present.is_none() == wants_absent;
        }
        let negated = self.op.negated();
        // One request value against the listed ones, with the operator's
        // sense: a negated operator wants it to match none of them.
        let one = |v: &str| {
            let any = self
                .values
                .iter()
                .any(|listed| self.matches(listed, v, context));
            any != negated
        };
        match (self.set, present) {
            (Set::Single, None) => self.if_exists || negated,
            (Set::Single, Some(vs)) => {
                if negated {
                    vs.iter().all(|v| one(v))
                } else {
                    vs.iter().any(|v| one(v))
                }
            }
            (Set::ForAnyValue, None) => false,
            (Set::ForAnyValue, Some(vs)) => vs.iter().any(|v| one(v)),
            (Set::ForAllValues, None) => true,
            (Set::ForAllValues, Some(vs)) => vs.iter().all(|v| one(v)),
        }
    }

    /// Whether the request's `value` matches one listed value, before the
    /// operator's negation.
    fn matches(&self, listed: &Value, value: &str, context: &Context) -> bool {
        match (self.op, listed) {
            (Op::StringEquals | Op::StringNotEquals, Value::Text(t)) => {
                substitute(t, context).is_some_and(|t| t == value)
            }
            (Op::StringEqualsIgnoreCase | Op::StringNotEqualsIgnoreCase, Value::Text(t)) => {
                substitute(t, context).is_some_and(|t| t.eq_ignore_ascii_case(value))
            }
            (Op::StringLike | Op::StringNotLike | Op::ArnLike | Op::ArnNotLike, Value::Text(t)) => {
                match t.contains("${") {
                    true => like(t, value, context),
                    false => WildMatch::new(t).matches(value),
                }
            }
            (Op::ArnEquals | Op::ArnNotEquals | Op::BinaryEquals, Value::Text(t)) => {
                substitute(t, context).is_some_and(|t| t == value)
            }
            (Op::Bool, Value::Bool(b)) => {
                value.eq_ignore_ascii_case(if *b { "true" } else { "false" })
            }
            (Op::IpAddress | Op::NotIpAddress, Value::Net(n)) => {
                value.parse::<IpAddr>().is_ok_and(|ip| n.contains(&ip))
            }
            (_, Value::Number(n)) => value
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| self.ordered(v.partial_cmp(n))),
            (_, Value::Date(d)) => date(value).is_some_and(|v| self.ordered(v.partial_cmp(d))),
            _ => false,
        }
    }
}

impl Condition {
    /// Whether a numeric or date comparison's outcome is what the
    /// operator asks for (before its negation).
    fn ordered(&self, o: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self.op {
            Op::NumericEquals | Op::NumericNotEquals | Op::DateEquals | Op::DateNotEquals => {
                o == Some(Equal)
            }
            Op::NumericLessThan | Op::DateLessThan => o == Some(Less),
            Op::NumericLessThanEquals | Op::DateLessThanEquals => matches!(o, Some(Less | Equal)),
            Op::NumericGreaterThan | Op::DateGreaterThan => o == Some(Greater),
            Op::NumericGreaterThanEquals | Op::DateGreaterThanEquals => {
                matches!(o, Some(Greater | Equal))
            }
            _ => false,
        }
    }
}

/// A date as IAM takes it: RFC 3339, a bare `YYYY-MM-DD`, or epoch seconds.
fn date(v: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        return Some(n);
    }
    if let Ok(t) = time::OffsetDateTime::parse(v, &Rfc3339) {
        return Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9);
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(v, &day)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp() as f64)
}

/// An address or a CIDR block (an address is its own /32 or /128).
fn net(v: &str) -> Option<IpNet> {
    let v = v.trim();
    v.parse::<IpNet>()
        .ok()
        .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from))
}
