//! Cross-origin resource sharing: which web pages may call a bucket from
//! a browser. A bucket's rules ([`CorsRule`], set by PutBucketCors) are
//! checked in two places, both at the HTTP layer because neither request
//! is an S3 operation that s3s routes:
//!
//! - a **preflight** (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`), which a browser sends unsigned
//!   before the real request: answered here, 200 with the allowing headers
//!   when a rule matches, `403 AccessForbidden` otherwise;
//! - the **real request** with an `Origin`: its answer (an error too) gets
//!   the `Access-Control-*` headers of the first rule that matches, so the
//!   browser lets the page read it.
//!
//! Matching follows S3: the first rule whose origins, methods and (for a
//! preflight) every requested header match wins. An origin or header
//! pattern may hold one `*`, matching any run of characters; headers match
//! case-insensitively, origins exactly.

use http::{HeaderMap, HeaderValue};
use s3s::{S3Result, s3_error};
use shardgate_meta::CorsRule;

/// S3's limit of rules per bucket.
pub const MAX_RULES: usize = 100;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// Checks a configuration as PutBucketCors receives it.
pub fn validate(rules: &[CorsRule]) -> S3Result<()> {
    if rules.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "A CORS configuration needs at least one CORSRule"
        ));
    }
    if rules.len() > MAX_RULES {
        return Err(s3_error!(
            InvalidArgument,
            "A CORS configuration has at most {MAX_RULES} rules, not {}",
            rules.len()
        ));
    }
    for rule in rules {
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "Each CORSRule needs an AllowedOrigin and an AllowedMethod"
            ));
        }
        if let Some(m) = rule
            .allowed_methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(s3_error!(
                InvalidRequest,
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            ));
        }
        for (what, patterns) in [
            ("AllowedOrigin", &rule.allowed_origins),
            ("AllowedHeader", &rule.allowed_headers),
        ] {
            if let Some(p) = patterns.iter().find(|p| p.matches('*').count() > 1) {
                return Err(s3_error!(
                    InvalidRequest,
                    "{what} \"{p}\" can not have more than one wildcard."
                ));
            }
        }
        if rule.max_age_seconds.is_some_and(|s| s < 0) {
            return Err(s3_error!(
                InvalidArgument,
                "MaxAgeSeconds must not be negative"
            ));
        }
    }
    Ok(())
}

/// Whether `value` matches `pattern` (at most one `*`, any run).
fn matches(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let eq = |a: &str, b: &str| match ignore_case {
        true => a.eq_ignore_ascii_case(b),
        false => a == b,
    };
    match pattern.split_once('*') {
        None => eq(pattern, value),
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.is_char_boundary(head.len())
                && value.is_char_boundary(value.len() - tail.len())
                && eq(&value[..head.len()], head)
                && eq(&value[value.len() - tail.len()..], tail)
        }
    }
}

/// The first rule that lets `origin` use `method` with every one of
/// `headers` (a preflight's `Access-Control-Request-Headers`; none for a
/// real request).
pub fn find<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<&'r CorsRule> {
    rules.iter().find(|r| {
        r.allowed_origins.iter().any(|o| matches(o, origin, false))
            && r.allowed_methods.iter().any(|m| m == method)
            && headers
                .iter()
                .all(|h| r.allowed_headers.iter().any(|p| matches(p, h, true)))
    })
}

/// The names in an `Access-Control-Request-Headers` value.
pub fn requested_headers(value: Option<&HeaderValue>) -> Vec<String> {
    value
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The headers that allow `origin` by `rule`; a preflight also gets the
/// headers it asked for and the cache time.
pub fn allow(
    rule: &CorsRule,
    origin: &str,
    preflight_headers: Option<&[String]>,
    out: &mut HeaderMap,
) {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(
        "access-control-allow-origin",
        if any_origin { "*" } else { origin },
    );
    if !any_origin {
        put("access-control-allow-credentials", "true");
    }
    put(
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        put(
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(headers) = preflight_headers {
        if !headers.is_empty() {
            put("access-control-allow-headers", &headers.join(", "));
        }
        if let Some(age) = rule.max_age_seconds {
            put("access-control-max-age", &age.to_string());
        }
    }
    // The answer depends on the Origin: caches must keep them apart.
    out.append(http::header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        CorsRule {
            allowed_origins: own(origins),
            allowed_methods: own(methods),
            allowed_headers: own(headers),
            ..Default::default()
        }
    }

    #[test]
    fn one_wildcard_matches_any_run() {
        assert!(matches(
            "https://*.example.com",
            "https://app.example.com",
            false
        ));
        assert!(!matches(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(matches("*", "", false));
        assert!(matches("x-amz-*", "X-Amz-Date", true));
        assert!(!matches("https://A.com", "https://a.com", false));
        // Head and tail must not overlap.
        assert!(!matches("ab*ba", "aba", false));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = vec![
            rule(&["https://a.com"], &["GET"], &[]),
            rule(&["*"], &["GET", "PUT"], &["content-type", "x-amz-*"]),
        ];
        let got = |o: &str, m: &str, h: &[&str]| {
            let h: Vec<String> = h.iter().map(|s| s.to_string()).collect();
            find(&rules, o, m, &h).map(|r| r.allowed_origins[0].clone())
        };
        assert_eq!(
            got("https://a.com", "GET", &[]).as_deref(),
            Some("https://a.com")
        );
        // Rule 1 allows no header: rule 2 does.
        assert_eq!(
            got("https://a.com", "GET", &["x-amz-date"]).as_deref(),
            Some("*")
        );
        assert_eq!(
            got("https://b.com", "PUT", &["content-type"]).as_deref(),
            Some("*")
        );
        assert_eq!(got("https://b.com", "DELETE", &[]), None);
        assert_eq!(got("https://b.com", "PUT", &["authorization"]), None);
    }

    #[test]
    fn configurations_follow_s3_rules() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[rule(&["*"], &["PATCH"], &[])]).is_err());
        assert!(validate(&[rule(&["https://*.*.com"], &["GET"], &[])]).is_err());
        assert!(validate(&[rule(&["*"], &["GET"], &["*-*"])]).is_err());
        assert!(validate(&[rule(&[], &["GET"], &[])]).is_err());
        assert!(validate(&vec![rule(&["*"], &["GET"], &[]); 101]).is_err());
        assert!(validate(&[rule(&["https://*.a.com"], &["GET", "HEAD"], &["*"])]).is_ok());
    }
}
