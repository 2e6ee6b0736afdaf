//! The log's last line of defence: every line is scrubbed before it is
//! written, whatever its level and whichever crate wrote it.
//!
//! Our own code never logs a secret, but at debug level s3s logs whole
//! requests, and a request carries bearer tokens: the `Authorization`
//! header's signature, a presigned URL's `X-Amz-Signature` (the whole key
//! to its object until it expires), aws-chunked chunk signatures. So each
//! formatted line (tracing-subscriber writes one event in one write) has
//! replaced with `[redacted]`: the value after every `signature=` (any
//! case: SigV4's hex and SigV2's base64, quoted or not), the signature of
//! a SigV2 `Authorization: AWS key:signature`, the token after `Bearer `
//! and `SharedKey ` (Azure), every `AGE-SECRET-KEY-...`, every PEM private
//! key, and every secret the gateway holds (its S3 secret key and the
//! backends' keys, inline, from files or from the environment, registered
//! once loaded). Lines are written without colour codes: an escape
//! sequence between a name and its value would hide the pair.

use std::io::Write;
use std::sync::{Arc, RwLock};

const REDACTED: &str = "[redacted]";

/// The secrets known so far; shared by every writer.
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<Vec<String>>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// From now on, `secret` never reaches the log.
    pub fn add(&self, secret: &str) {
        if secret.len() < 8 {
            return; // too short to scrub without scrubbing ordinary text
        }
        let mut list = match self.0.write() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.push(secret.to_string());
    }

    /// `line` with every secret and signature replaced.
    pub fn scrub(&self, line: &str) -> String {
        let mut out = scrub_signatures(line);
        out = scrub_prefixed(&out, "AGE-SECRET-KEY-");
        for scheme in ["Bearer ", "SharedKey ", "AWS "] {
            out = scrub_after(&out, scheme);
        }
        out = scrub_pem(&out);
        let list = match self.0.read() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        for secret in list.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Where a token ends: whitespace, a quote, a separator of headers or
/// query parameters.
fn token_end(s: &str) -> usize {
    s.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '&' | ',' | ';' | ')'))
        .unwrap_or(s.len())
}

/// Replaces the token after every `scheme` (`Bearer abc` -> `Bearer
/// [redacted]`); for `AWS ` (SigV2), only what follows the access key's
/// colon.
fn scrub_after(line: &str, scheme: &str) -> String {
    if !line.contains(scheme) {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(scheme) {
        let start = i + scheme.len();
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = token_end(after);
        let token = &after[..end];
        match (scheme, token.split_once(':')) {
            ("AWS ", Some((key, sig))) if !sig.is_empty() => {
                out.push_str(key);
                out.push(':');
                out.push_str(REDACTED);
            }
            ("AWS ", _) => out.push_str(token),
            _ if token.is_empty() => {}
            _ => out.push_str(REDACTED),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces every PEM private key block, even one cut short.
fn scrub_pem(line: &str) -> String {
    const BEGIN: &str = "-----BEGIN";
    if !line.contains("PRIVATE KEY") {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(BEGIN) {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after
            .find("PRIVATE KEY-----")
            .and_then(|first| {
                let past = first + "PRIVATE KEY-----".len();
                after[past..]
                    .find("PRIVATE KEY-----")
                    .map(|second| past + second + "PRIVATE KEY-----".len())
            })
            .unwrap_or(after.len());
        out.push_str(REDACTED);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces the value after every `signature=` (any case, quoted or not):
/// SigV4's hex, SigV2's base64.
fn scrub_signatures(line: &str) -> String {
    const KEY: &str = "signature=";
    let lower = line.to_ascii_lowercase();
    if !lower.contains(KEY) {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(KEY) {
        let mut value = at + found + KEY.len();
        // `signature="..."`, as s3s's debug lines quote it.
        if line[value..].starts_with('"') {
            value += 1;
        }
        out.push_str(&line[at..value]);
        let len = token_end(&line[value..]);
        if len > 0 {
            out.push_str(REDACTED);
        }
        at = value + len;
    }
    out.push_str(&line[at..]);
    out
}

/// Replaces every word that starts with `prefix` (up to whitespace or a
/// quote).
fn scrub_prefixed(line: &str, prefix: &str) -> String {
    if !line.contains(prefix) {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i]);
        out.push_str(REDACTED);
        let after = &rest[i..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A writer to stderr that scrubs what it is given.
pub struct Writer {
    secrets: Secrets,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.secrets.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Secrets {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        Writer {
            secrets: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_identities_and_known_secrets_are_scrubbed() {
        let s = Secrets::default();
        s.add("S3cr3tKeyValue1234");
        let line = "authorization: AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, Signature=ad67b1340aadd09c4f uri=/b/k?X-Amz-Signature=0f0e&x=1 chunk-signature=abc AGE-SECRET-KEY-1QQQ\" key S3cr3tKeyValue1234 SignatureDoesNotMatch mismatch signature=\"5b5c4f\"";
        let out = s.scrub(line);
        for gone in [
            "ad67b1340aadd09c4f",
            "0f0e",
            "=abc",
            "AGE-SECRET-KEY-",
            "S3cr3tKeyValue1234",
            "5b5c4f",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("Credential=AK/x"), "{out}");
        assert!(out.contains("SignatureDoesNotMatch"), "{out}");
        assert!(out.contains("Signature=[redacted] uri"), "{out}");
    }

    #[test]
    fn sigv2_tokens_and_private_keys_are_scrubbed() {
        let s = Secrets::default();
        let line = "authorization: AWS AKIDEXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g= GET /b/k?AWSAccessKeyId=AK&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D&Expires=1 signature=\"bWq2s1WEIj+Ydj0vQ697zp+IXMU=\" x-ms: SharedKey acct:c2VjcmV0 auth: Bearer eyJhbGciOi.x.y key: \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIB\\n-----END PRIVATE KEY-----\\n\" AWS said no";
        let out = s.scrub(line);
        for gone in [
            "qgk2+6Sv9",
            "vjbyPxybdZaNmGa",
            "bWq2s1WEIj",
            "c2VjcmV0",
            "eyJhbGciOi",
            "MIIEvQIB",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("AWS AKIDEXAMPLE:[redacted]"), "{out}");
        assert!(out.contains("&Expires=1"), "{out}");
        assert!(out.contains("AWS said no"), "{out}");
    }
}
