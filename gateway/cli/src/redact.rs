//! The log's last line of defence: every line is scrubbed before it is
//! written, whatever its level and whichever crate wrote it.
//!
//! Our own code never logs a secret, but at debug level s3s logs whole
//! requests, and a request carries bearer tokens: the `Authorization`
//! header's signature, a presigned URL's `X-Amz-Signature` (the whole key
//! to its object until it expires), aws-chunked chunk signatures. So each
//! formatted line (tracing-subscriber writes one event in one write) has
//! every `signature=<hex>` (any case), every `AGE-SECRET-KEY-...` and every
//! secret the gateway holds (its S3 secret key, registered once loaded)
//! replaced with `[redacted]`.

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

/// Replaces the hex after every `signature=` (any case, quoted or not).
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
        let hex = line[value..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        if hex > 0 {
            out.push_str(REDACTED);
        }
        at = value + hex;
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
}
