//! age encryption of a segment, written so that chunks seal in parallel.
//!
//! The `age` crate's stream writer encrypts serially and keeps the file key
//! to itself. We keep the crate for what must not be hand-rolled (x25519
//! key wrapping and unwrapping, stanza parsing) and write the rest of the
//! age v1 format (C2SP age spec) ourselves: the header with its HMAC, the
//! 16-byte nonce, and the STREAM payload, sealed chunk by chunk with ring's
//! ChaCha20-Poly1305. Chunk i depends only on the payload key and i, so any
//! thread can seal or open any chunk, and a range read opens only the chunks
//! it needs. `header ++ nonce ++ sealed chunks` is a standard age file: the
//! `age` CLI and the crate's own decryptor read it (tested).
//!
//! The [`Envelope`] (header + nonce) is stored in the manifest; it holds the
//! file key wrapped for each recipient, never in clear.

use std::collections::HashSet;
use std::fmt;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use base64::Engine;
use base64::prelude::BASE64_STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{CoreError, Result};
use crate::layout::TAG_BYTES;

const MAGIC_LINE: &[u8] = b"age-encryption.org/v1\n";
const STANZA_PREFIX: &[u8] = b"-> ";
const MAC_PREFIX: &[u8] = b"---";
const ENCODED_MAC_LEN: usize = 43;
const FINGERPRINT_CONTEXT: &str = "shardgate 2026-12 envelope fingerprint v1";
/// Bytes of the STREAM nonce that follows the header.
pub const NONCE_BYTES: usize = 16;

/// The public keys every new segment is encrypted to: the gateway's own
/// recipients plus, optionally, an offline recovery key.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parses `age1...` recipient strings.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<Self> {
        let list = keys
            .iter()
            .map(|k| {
                k.as_ref()
                    .trim()
                    .parse::<age::x25519::Recipient>()
                    .map_err(|e| CoreError::InvalidKey(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(list)
    }

    /// Wraps already parsed recipients.
    pub fn new(list: Vec<age::x25519::Recipient>) -> Result<Self> {
        if list.is_empty() {
            return Err(CoreError::NoRecipients);
        }
        Ok(Self(list))
    }

    /// These recipients and `other`'s (e.g. the gateway's plus a recovery key).
    pub fn join(mut self, other: Recipients) -> Self {
        self.0.extend(other.0);
        self
    }

    /// The `age1...` strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|r| r.to_string()))
            .finish()
    }
}

/// The secret keys that can open segments.
#[derive(Clone)]
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    /// Parses an age identity file: `AGE-SECRET-KEY-1...` lines, `#`
    /// comments and blank lines ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let list = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.parse::<age::x25519::Identity>()
                    .map_err(|e| CoreError::InvalidKey(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(list)
    }

    /// Wraps already parsed identities.
    pub fn new(list: Vec<age::x25519::Identity>) -> Result<Self> {
        if list.is_empty() {
            return Err(CoreError::InvalidKey("no identity".into()));
        }
        Ok(Self(list))
    }

    /// One fresh x25519 identity.
    pub fn generate() -> Self {
        Self(vec![age::x25519::Identity::generate()])
    }

    /// The identities in age identity-file format (`AGE-SECRET-KEY-1...`
    /// lines with a `# public key:` comment each). Secret: store it 0600.
    pub fn to_identity_file(&self) -> String {
        self.0
            .iter()
            .map(|id| {
                format!(
                    "# public key: {}\n{}\n",
                    id.to_public(),
                    id.to_string().expose_secret()
                )
            })
            .collect()
    }

    /// The recipients matching these identities.
    pub fn recipients(&self) -> Recipients {
        Recipients(self.0.iter().map(|i| i.to_public()).collect())
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

/// What the manifest keeps to decrypt a segment: the age header (file key
/// wrapped per recipient, plus its MAC) and the STREAM nonce.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The age header, from `age-encryption.org/v1` to the MAC line's newline.
    pub header: Vec<u8>,
    /// The payload nonce.
    pub nonce: [u8; NONCE_BYTES],
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Envelope({} header bytes)", self.header.len())
    }
}

impl Envelope {
    /// A fresh file key wrapped for `recipients`, and the key that seals the
    /// payload.
    pub fn seal(recipients: &Recipients) -> Result<(Self, PayloadKey)> {
        let file_key = FileKey::init_with_mut(|k| rand::rng().fill_bytes(k));
        let mut stanzas = Vec::new();
        let mut labels: Option<HashSet<String>> = None;
        for r in &recipients.0 {
            let (s, l) = age::Recipient::wrap_file_key(r, &file_key)
                .map_err(|e| CoreError::Wrap(e.to_string()))?;
            match &labels {
                Some(seen) if *seen != l => {
                    return Err(CoreError::Wrap(
                        "recipients with incompatible labels".into(),
                    ));
                }
                _ => labels = Some(l),
            }
            stanzas.extend(s);
        }
        let mut header = MAGIC_LINE.to_vec();
        for s in &stanzas {
            write_stanza(&mut header, s);
        }
        header.extend_from_slice(MAC_PREFIX);
        let mac = header_mac(&file_key, &header)?;
        header.push(b' ');
        header.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac).as_bytes());
        header.push(b'\n');
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let key = PayloadKey::derive(&file_key, &nonce)?;
        Ok((Self { header, nonce }, key))
    }

    /// Unwraps the file key with one of `identities`, checks the header MAC
    /// and derives the payload key.
    pub fn open(&self, identities: &Identities) -> Result<PayloadKey> {
        let parsed = parse_header(&self.header)?;
        let file_key = identities
            .0
            .iter()
            .find_map(|id| age::Identity::unwrap_stanzas(id, &parsed.stanzas))
            .ok_or(CoreError::NoMatchingIdentity)?
            .map_err(|_| CoreError::NoMatchingIdentity)?;
        let mac = header_mac(&file_key, &self.header[..parsed.mac_covers])?;
        if !constant_time_eq(&mac, &parsed.mac) {
            return Err(CoreError::HeaderMac);
        }
        PayloadKey::derive(&file_key, &self.nonce)
    }

    /// A name for this envelope that reveals nothing of its key: the
    /// blake3 of its header and nonce. Every envelope has its own file key
    /// (fresh ephemeral shares and a MAC under that key), so equal
    /// fingerprints mean the same key: caches of opened keys use it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
        h.update(&self.header);
        h.update(&self.nonce);
        *h.finalize().as_bytes()
    }

    /// The bytes that precede the sealed chunks in a standard age file.
    pub fn age_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.len() + NONCE_BYTES);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.nonce);
        out
    }
}

/// A small secret (an S3 user's secret key) sealed like an object's
/// segment of one chunk: `header ‖ nonce ‖ sealed` is a standard age file,
/// so only the gateway's identities (or the recovery key) open it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub header: Vec<u8>,
    pub nonce: [u8; NONCE_BYTES],
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.sealed.len())
    }
}

impl SealedSecret {
    /// Seals `plain` (at most one chunk, 64 KiB) to `recipients`.
    pub fn seal(recipients: &Recipients, plain: &[u8]) -> Result<Self> {
        if plain.len() > crate::layout::CHUNK_BYTES {
            return Err(CoreError::Wrap(
                "a sealed secret is one chunk at most".into(),
            ));
        }
        let (envelope, key) = Envelope::seal(recipients)?;
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + TAG_BYTES, 0);
        key.seal_chunk(0, true, &mut buf)?;
        Ok(Self {
            header: envelope.header,
            nonce: envelope.nonce,
            sealed: buf,
        })
    }

    /// The secret, opened with one of `identities`.
    pub fn open(&self, identities: &Identities) -> Result<Vec<u8>> {
        let envelope = Envelope {
            header: self.header.clone(),
            nonce: self.nonce,
        };
        let key = envelope.open(identities)?;
        let mut buf = self.sealed.clone();
        Ok(key.open_chunk(0, true, &mut buf)?.to_vec())
    }
}

/// Seals `plain` whole as a standard age file to `recipients` (units of
/// the journal: the `age` crate's own stream, as nothing reads them in
/// ranges).
pub fn seal_file(recipients: &Recipients, plain: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let encryptor =
        age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CoreError::Wrap(e.to_string()))?;
    let mut out = Vec::with_capacity(
        plain.len() + plain.len() / crate::layout::CHUNK_BYTES * TAG_BYTES + 1024,
    );
    let io = |e: std::io::Error| CoreError::Wrap(e.to_string());
    let mut writer = encryptor.wrap_output(&mut out).map_err(io)?;
    writer.write_all(plain).map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(out)
}

/// Opens an age file sealed by [`seal_file`] with one of `identities`.
pub fn open_file(identities: &Identities, file: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let decryptor =
        age::Decryptor::new(file).map_err(|_| CoreError::MalformedHeader("not an age file"))?;
    let mut reader = decryptor
        .decrypt(identities.0.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CoreError::NoMatchingIdentity,
            _ => CoreError::HeaderMac,
        })?;
    let mut out = Vec::with_capacity(file.len());
    reader
        .read_to_end(&mut out)
        .map_err(|_| CoreError::ChunkAuthentication { chunk: 0 })?;
    Ok(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_stanza(out: &mut Vec<u8>, s: &Stanza) {
    out.extend_from_slice(STANZA_PREFIX);
    out.extend_from_slice(s.tag.as_bytes());
    for a in &s.args {
        out.push(b' ');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b'\n');
    let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
    let mut rest = body.as_bytes();
    // Full 64-column lines, then a last line that is always short (maybe empty).
    while rest.len() >= 64 {
        out.extend_from_slice(&rest[..64]);
        out.push(b'\n');
        rest = &rest[64..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

fn header_mac(file_key: &FileKey, covered: &[u8]) -> Result<[u8; 32]> {
    let mac_key = age_core::primitives::hkdf(&[], b"header", file_key.expose_secret());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key)
        .map_err(|_| CoreError::MalformedHeader("bad MAC key length"))?;
    mac.update(covered);
    Ok(mac.finalize().into_bytes().into())
}

struct ParsedHeader {
    stanzas: Vec<Stanza>,
    mac: Vec<u8>,
    mac_covers: usize,
}

fn parse_header(header: &[u8]) -> Result<ParsedHeader> {
    let mut rest = header
        .strip_prefix(MAGIC_LINE)
        .ok_or(CoreError::MalformedHeader("not an age v1 header"))?;
    let mut stanzas = Vec::new();
    while rest.starts_with(STANZA_PREFIX) {
        match age_core::format::read::age_stanza(rest) {
            Ok((tail, stanza)) => {
                stanzas.push(Stanza::from(stanza));
                rest = tail;
            }
            Err(_) => return Err(CoreError::MalformedHeader("bad recipient stanza")),
        }
    }
    if stanzas.is_empty() {
        return Err(CoreError::MalformedHeader("no recipient stanza"));
    }
    let mac_covers = header.len() - rest.len() + MAC_PREFIX.len();
    let mac_line = rest
        .strip_prefix(b"--- ".as_slice())
        .ok_or(CoreError::MalformedHeader("missing MAC line"))?;
    if mac_line.len() != ENCODED_MAC_LEN + 1 || mac_line[ENCODED_MAC_LEN] != b'\n' {
        return Err(CoreError::MalformedHeader("bad MAC line"));
    }
    let mac = BASE64_STANDARD_NO_PAD
        .decode(&mac_line[..ENCODED_MAC_LEN])
        .map_err(|_| CoreError::MalformedHeader("MAC is not base64"))?;
    Ok(ParsedHeader {
        stanzas,
        mac,
        mac_covers,
    })
}

/// The ChaCha20-Poly1305 key of one segment's payload.
#[derive(Clone)]
pub struct PayloadKey(LessSafeKey, PayloadKeyBytes);

/// The 32 bytes a [`PayloadKey`] is made of, for a cache of opened keys
/// (ring's key object is over 500 bytes; these are 32, zeroed when
/// dropped).
#[derive(Clone)]
pub struct PayloadKeyBytes(zeroize::Zeroizing<[u8; 32]>);

impl fmt::Debug for PayloadKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadKeyBytes(..)")
    }
}

impl fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayloadKey(..)")
    }
}

impl PayloadKey {
    fn derive(file_key: &FileKey, nonce: &[u8; NONCE_BYTES]) -> Result<Self> {
        let key = age_core::primitives::hkdf(nonce, b"payload", file_key.expose_secret());
        Self::from_bytes(&PayloadKeyBytes(zeroize::Zeroizing::new(key)))
    }

    /// The key made of `bytes` (from [`PayloadKey::to_bytes`]).
    pub fn from_bytes(bytes: &PayloadKeyBytes) -> Result<Self> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes.0[..])
            .map_err(|_| CoreError::MalformedHeader("bad payload key length"))?;
        Ok(Self(LessSafeKey::new(unbound), bytes.clone()))
    }

    /// Its 32 bytes, for a cache.
    pub fn to_bytes(&self) -> PayloadKeyBytes {
        self.1.clone()
    }

    fn nonce(chunk: u64, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&chunk.to_be_bytes());
        n[11] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    /// Seals chunk `chunk` in place: `buf` holds the plaintext followed by
    /// [`TAG_BYTES`] bytes of room for the tag.
    pub fn seal_chunk(&self, chunk: u64, last: bool, buf: &mut [u8]) -> Result<()> {
        let plain_len = buf
            .len()
            .checked_sub(TAG_BYTES)
            .ok_or(CoreError::StripeShape {
                stripe: chunk,
                reason: "chunk buffer shorter than a tag".into(),
            })?;
        let (plain, tag_room) = buf.split_at_mut(plain_len);
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(chunk, last), Aad::empty(), plain)
            .map_err(|_| CoreError::ChunkAuthentication { chunk })?;
        tag_room.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens chunk `chunk` in place; returns the plaintext part of `buf`.
    pub fn open_chunk<'a>(&self, chunk: u64, last: bool, buf: &'a mut [u8]) -> Result<&'a [u8]> {
        self.0
            .open_in_place(Self::nonce(chunk, last), Aad::empty(), buf)
            .map(|p| &*p)
            .map_err(|_| CoreError::ChunkAuthentication { chunk })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_the_identity_only() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let recipients = Recipients::new(vec![id.to_public()]).unwrap();
        let sealed = SealedSecret::seal(&recipients, b"wJalrXUtnFEMI/K7MDENG").unwrap();
        assert!(!sealed.sealed.windows(5).any(|w| w == b"wJalr"));
        let ids = |i: &age::x25519::Identity| Identities::new(vec![i.clone()]).unwrap();
        assert_eq!(sealed.open(&ids(&id)).unwrap(), b"wJalrXUtnFEMI/K7MDENG");
        assert!(sealed.open(&ids(&other)).is_err());
        let mut tampered = sealed.clone();
        tampered.sealed[0] ^= 1;
        assert!(tampered.open(&ids(&id)).is_err());
    }

    fn seal_file(recipients: &Recipients, plain: &[u8]) -> Vec<u8> {
        let (env, key) = Envelope::seal(recipients).unwrap();
        let mut out = env.age_prefix();
        let chunks: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(crate::layout::CHUNK_BYTES).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            let mut buf = c.to_vec();
            buf.resize(c.len() + TAG_BYTES, 0);
            key.seal_chunk(i as u64, i + 1 == chunks.len(), &mut buf)
                .unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn the_age_crate_decrypts_what_we_seal() {
        let id = age::x25519::Identity::generate();
        let recovery = age::x25519::Identity::generate();
        let rs = Recipients::new(vec![id.to_public(), recovery.to_public()]).unwrap();
        for len in [0usize, 1, 65536, 65537, 200_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let file = seal_file(&rs, &plain);
            for who in [&id, &recovery] {
                let d = age::Decryptor::new(&file[..]).unwrap();
                let mut r = d
                    .decrypt(std::iter::once(who as &dyn age::Identity))
                    .unwrap();
                let mut back = Vec::new();
                r.read_to_end(&mut back).unwrap();
                assert_eq!(back, plain, "len {len}");
            }
        }
    }

    #[test]
    fn open_needs_a_matching_identity_and_an_intact_header() {
        let id = age::x25519::Identity::generate();
        let ids = Identities::new(vec![id.clone()]).unwrap();
        let (env, key) = Envelope::seal(&ids.recipients()).unwrap();
        let mut buf = b"hello".to_vec();
        buf.resize(5 + TAG_BYTES, 0);
        key.seal_chunk(0, true, &mut buf).unwrap();
        let opened = env.open(&ids).unwrap();
        assert_eq!(
            opened.open_chunk(0, true, &mut buf.clone()).unwrap(),
            b"hello"
        );
        assert!(
            opened.open_chunk(0, false, &mut buf.clone()).is_err(),
            "last flag is bound"
        );
        assert!(
            opened.open_chunk(1, true, &mut buf.clone()).is_err(),
            "counter is bound"
        );

        let other = Identities::new(vec![age::x25519::Identity::generate()]).unwrap();
        assert!(matches!(
            env.open(&other),
            Err(CoreError::NoMatchingIdentity)
        ));

        let mut tampered = env.clone();
        let at = tampered.header.len() - 10;
        tampered.header[at] ^= 1;
        assert!(tampered.open(&ids).is_err());
        let mut cut = env.clone();
        cut.header.truncate(30);
        assert!(matches!(cut.open(&ids), Err(CoreError::MalformedHeader(_))));
    }

    #[test]
    fn identity_files_parse_with_comments() {
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# created: now\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        let ids = Identities::parse(&text).unwrap();
        let again = Identities::parse(&ids.to_identity_file()).unwrap();
        assert_eq!(
            format!("{:?}", again.recipients()),
            format!("{:?}", ids.recipients())
        );
        assert_eq!(
            format!("{:?}", ids.recipients()),
            format!("[\"{}\"]", id.to_public())
        );
        assert!(Identities::parse("# nothing\n").is_err());
        assert!(Recipients::parse(&["age1bogus"]).is_err());
        assert!(Recipients::parse::<&str>(&[]).is_err());
    }
}
