//! What gateways and peers say to each other, and the bounds every decoder
//! keeps.
//!
//! Two protocols:
//!
//! - **Control** (`/shardgate/control/1`), request-response with libp2p's
//!   cbor codec: stat, delete, health and the storage challenge. Its
//!   messages are small, so the codec's whole-message buffering is fine;
//!   its size limits are set here ([`MAX_CONTROL_REQUEST`],
//!   [`MAX_CONTROL_RESPONSE`]).
//! - **Blob** (`/shardgate/blob/1`), one libp2p stream per operation, for
//!   fragment bytes and listings. The cbor codec would hold a whole
//!   fragment in memory on both sides (its default response limit is
//!   10 MiB); a stream moves any size in frames of at most [`MAX_CHUNK`].
//!
//! A blob stream starts with a **header frame** from the dialer: a `u32`
//! big-endian length, then a postcard-encoded [`BlobRequest`] of at most
//! [`MAX_HEADER`] bytes. Then:
//!
//! - `Get`: the peer answers a header frame ([`BlobReply`]) and, when it is
//!   `Ok { size }`, exactly `size` raw bytes.
//! - `Put`: the peer answers [`BlobReply::Ready`] (or an error); the
//!   dialer sends data frames (`u32` length, at most [`MAX_CHUNK`], then
//!   that many bytes) and an empty frame to commit; the peer answers one
//!   [`BlobReply`]. A stream that ends without the empty frame aborts the
//!   write: nothing becomes visible.
//!
//! Every request gets a first answer before anything else happens, so a
//! stream that breaks before it (libp2p-stream drops inbound streams that
//! arrive faster than the peer accepts them) was not acted on, and the
//! dialer opens another.
//! - `List`: the peer answers frames each holding a postcard
//!   `Vec<(String, u64)>` of at most [`LIST_PAGE`] entries, an empty frame
//!   at the end, or a [`BlobReply::Err`] header in place of a page.
//!
//! Every length is checked before anything is allocated: a peer that
//! announces 4 GiB gets an error, not an allocation.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The control protocol (cbor request-response).
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/shardgate/control/1");
/// The blob protocol (one stream per get, put or list).
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/shardgate/blob/1");
/// The Kademlia protocol: shardgate's own DHT, apart from the public one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shardgate/kad/1");

/// The largest header frame.
pub const MAX_HEADER: usize = 4 * 1024;
/// The largest data frame of a put (and a list page).
pub const MAX_CHUNK: usize = 1024 * 1024;
/// Entries per list page.
pub const LIST_PAGE: usize = 1000;
/// The largest control request the codec accepts.
pub const MAX_CONTROL_REQUEST: u64 = 64 * 1024;
/// The largest control response the codec accepts: a challenge's answer
/// plus framing.
pub const MAX_CONTROL_RESPONSE: u64 = MAX_CHALLENGE_BYTES + 64 * 1024;
/// The most bytes one challenge may ask for.
pub const MAX_CHALLENGE_BYTES: u64 = 4 * 1024 * 1024;
/// The most ranges one challenge may name.
pub const MAX_CHALLENGE_RANGES: usize = 64;
/// The longest blob name accepted on the wire (names are random and short;
/// this only bounds a hostile one).
pub const MAX_NAME: usize = 512;

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// A blob's size.
    Stat { name: String },
    /// Deletes a blob.
    Delete { name: String },
    /// Free space and writability.
    Health,
    /// Proof of storage: the bytes of `ranges` of blob `name`, bound to
    /// `nonce`.
    Challenge {
        name: String,
        nonce: [u8; 32],
        ranges: Vec<(u64, u64)>,
    },
}

/// A control response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The blob's size.
    Stat { size: u64 },
    /// The blob was deleted.
    Deleted,
    /// The peer's disk.
    Health {
        free_bytes: u64,
        used_bytes: Option<u64>,
        writable: bool,
    },
    /// The challenged ranges, in order, and the proof over them.
    Challenge { chunks: Vec<Bytes>, proof: [u8; 32] },
    /// The request failed.
    Error(WireError),
}

/// A failure as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// No such blob.
    #[error("blob not found")]
    NotFound,
    /// The name is taken.
    #[error("blob already exists")]
    AlreadyExists,
    /// The range is outside the blob.
    #[error("range outside the blob of {size} bytes")]
    InvalidRange { size: u64 },
    /// The peer's disk is full.
    #[error("no space left")]
    NoSpace,
    /// The peer refuses writes.
    #[error("not writable: {0}")]
    NotWritable(String),
    /// The requester may not do this (a peer on the allowlist for the DHT
    /// only, not a gateway).
    #[error("denied: {0}")]
    Denied(String),
    /// The request broke the protocol.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Any other failure on the peer.
    #[error("{0}")]
    Other(String),
}

/// The header a blob stream starts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobRequest {
    /// Bytes `start..end` of a blob.
    Get { name: String, start: u64, end: u64 },
    /// Writes a blob; data frames follow.
    Put { name: String },
    /// Every blob, in pages.
    List,
}

/// The peer's answer on a blob stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobReply {
    /// Done; for a get, `size` raw bytes follow; for a put, the blob's size.
    Ok { size: u64 },
    /// A put is under way: send the data frames.
    Ready,
    /// Failed.
    Err(WireError),
}

/// A frame of a listing, at most [`MAX_CHUNK`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListFrame {
    /// Up to [`LIST_PAGE`] blobs: name and size.
    Page(Vec<(String, u64)>),
    /// The listing is complete.
    End,
    /// The listing failed here.
    Err(WireError),
}

/// A decoding or framing failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] io::Error),
    /// A frame announced more than the protocol allows.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A frame's contents do not decode.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// The control protocol's codec, with this protocol's size limits: a
/// longer message is cut at the limit and fails to decode.
pub fn control_codec()
-> libp2p::request_response::cbor::codec::Codec<ControlRequest, ControlResponse> {
    libp2p::request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_CONTROL_REQUEST)
        .set_response_size_maximum(MAX_CONTROL_RESPONSE)
}

/// The DHT key under which a node publishes its listen addresses, so that
/// one that moved is found again by its PeerId. Addresses found there are
/// hints: dialing checks the PeerId in the handshake.
pub fn address_record_key(peer: &libp2p::PeerId) -> Vec<u8> {
    let mut key = b"/shardgate/addrs/".to_vec();
    key.extend_from_slice(&peer.to_bytes());
    key
}

/// The key a blob is provided under in the DHT: a hash of its name, so
/// that the DHT never sees one.
pub fn provider_key(name: &str) -> Vec<u8> {
    blake3::derive_key("shardgate peer provider key v1", name.as_bytes()).to_vec()
}

/// The proof a peer sends with a challenge's bytes: a MAC keyed by the
/// gateway's fresh nonce over the name, each range and its bytes, so an
/// answer belongs to one challenge and no other.
pub fn challenge_proof(
    nonce: &[u8; 32],
    name: &str,
    ranges: &[(u64, u64)],
    chunks: &[Bytes],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(nonce);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    for ((start, end), chunk) in ranges.iter().zip(chunks) {
        h.update(&start.to_le_bytes());
        h.update(&end.to_le_bytes());
        h.update(&(chunk.len() as u64).to_le_bytes());
        h.update(chunk);
    }
    *h.finalize().as_bytes()
}

/// Checks a challenge before serving it: a name, at most
/// [`MAX_CHALLENGE_RANGES`] well-formed ranges of at most
/// [`MAX_CHALLENGE_BYTES`] in all.
pub fn check_challenge(name: &str, ranges: &[(u64, u64)]) -> Result<(), WireError> {
    check_name(name)?;
    if ranges.len() > MAX_CHALLENGE_RANGES {
        return Err(WireError::Malformed(format!(
            "{} ranges, at most {MAX_CHALLENGE_RANGES}",
            ranges.len()
        )));
    }
    let mut total = 0u64;
    for &(start, end) in ranges {
        if start > end {
            return Err(WireError::Malformed(format!("range {start}..{end}")));
        }
        total = total.saturating_add(end - start);
    }
    if total > MAX_CHALLENGE_BYTES {
        return Err(WireError::Malformed(format!(
            "{total} bytes challenged, at most {MAX_CHALLENGE_BYTES}"
        )));
    }
    Ok(())
}

/// Checks a name's length (its characters are checked where it becomes a
/// `BlobName`).
pub fn check_name(name: &str) -> Result<(), WireError> {
    match name.len() {
        0 => Err(WireError::Malformed("empty blob name".into())),
        n if n > MAX_NAME => Err(WireError::Malformed(format!(
            "blob name of {n} bytes, at most {MAX_NAME}"
        ))),
        _ => Ok(()),
    }
}

/// Reads a frame's length and checks it against `max`.
async fn read_len<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads one frame of at most `max` bytes (empty at an end marker).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Bytes, FrameError> {
    let len = read_len(r, max).await?;
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(data).await
}

/// Reads a postcard-encoded header frame.
pub async fn read_header<T, R>(r: &mut R) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    read_message(r, MAX_HEADER).await
}

/// Reads a postcard-encoded frame of at most `max` bytes.
pub async fn read_message<T, R>(r: &mut R, max: usize) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let frame = read_frame(r, max).await?;
    decode_header(&frame)
}

/// Decodes a header frame's contents.
pub fn decode_header<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(frame)?)
}

/// Writes a postcard-encoded header frame.
pub async fn write_header<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    header: &T,
) -> io::Result<()> {
    write_message(w, header, MAX_HEADER).await
}

/// Writes a postcard-encoded frame of at most `max` bytes.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &T,
    max: usize,
) -> io::Result<()> {
    let bytes =
        postcard::to_stdvec(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes over {max}", bytes.len()),
        ));
    }
    write_frame(w, &bytes).await?;
    w.flush().await
}

/// Writes data as frames of at most [`MAX_CHUNK`] bytes.
pub async fn write_chunks<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(MAX_CHUNK) {
        write_frame(w, chunk).await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::io::Cursor;
    use proptest::prelude::*;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn headers_round_trip() {
        let req = BlobRequest::Get {
            name: "abc".into(),
            start: 3,
            end: 9,
        };
        let mut buf = Vec::new();
        block_on(write_header(&mut buf, &req)).unwrap();
        let back: BlobRequest = block_on(read_header(&mut Cursor::new(buf))).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn an_oversize_frame_is_refused_before_allocating() {
        let mut buf = u32::MAX.to_be_bytes().to_vec();
        buf.extend_from_slice(b"tiny");
        let err = block_on(read_frame(&mut Cursor::new(buf), MAX_CHUNK)).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize),
            "{err}"
        );
    }

    #[test]
    fn a_short_frame_is_an_error() {
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        let err = block_on(read_frame(&mut Cursor::new(buf), MAX_CHUNK)).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }

    #[test]
    fn challenges_are_bounded() {
        assert!(check_challenge("n", &[(0, MAX_CHALLENGE_BYTES)]).is_ok());
        assert!(check_challenge("n", &[(0, MAX_CHALLENGE_BYTES + 1)]).is_err());
        assert!(check_challenge("n", &[(0, u64::MAX), (0, u64::MAX)]).is_err());
        assert!(check_challenge("n", &[(5, 4)]).is_err());
        assert!(check_challenge("", &[]).is_err());
        assert!(check_challenge("n", &vec![(0, 1); MAX_CHALLENGE_RANGES + 1]).is_err());
    }

    #[test]
    fn a_proof_binds_nonce_ranges_and_bytes() {
        let chunks = [Bytes::from_static(b"hello")];
        let p = challenge_proof(&[1; 32], "b", &[(0, 5)], &chunks);
        assert_ne!(p, challenge_proof(&[2; 32], "b", &[(0, 5)], &chunks));
        assert_ne!(p, challenge_proof(&[1; 32], "b", &[(1, 6)], &chunks));
        assert_ne!(
            p,
            challenge_proof(&[1; 32], "b", &[(0, 5)], &[Bytes::from_static(b"hellO")])
        );
        assert_ne!(p, challenge_proof(&[1; 32], "c", &[(0, 5)], &chunks));
    }

    fn read_control(
        bytes: Vec<u8>,
    ) -> (
        std::io::Result<ControlRequest>,
        std::io::Result<ControlResponse>,
    ) {
        use libp2p::request_response::Codec;
        let mut codec = control_codec();
        let req = block_on(codec.read_request(&CONTROL_PROTOCOL, &mut Cursor::new(bytes.clone())));
        let resp = block_on(codec.read_response(&CONTROL_PROTOCOL, &mut Cursor::new(bytes)));
        (req, resp)
    }

    fn encode<T>(v: &T) -> Vec<u8>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
    {
        use libp2p::request_response::Codec;
        let mut out = Vec::new();
        let mut codec = libp2p::request_response::cbor::codec::Codec::<T, T>::default();
        block_on(codec.write_request(&CONTROL_PROTOCOL, &mut out, v.clone())).unwrap();
        out
    }

    #[test]
    fn control_messages_round_trip_and_oversize_ones_fail() {
        let resp = ControlResponse::Challenge {
            chunks: vec![Bytes::from(vec![7u8; 1000])],
            proof: [1; 32],
        };
        assert_eq!(read_control(encode(&resp)).1.unwrap(), resp);
        // A challenge answer over the limit is cut and fails to decode.
        let huge = ControlResponse::Challenge {
            chunks: vec![Bytes::from(vec![7u8; MAX_CONTROL_RESPONSE as usize + 1])],
            proof: [1; 32],
        };
        assert!(read_control(encode(&huge)).1.is_err());
        let long_name = ControlRequest::Stat {
            name: "n".repeat(MAX_CONTROL_REQUEST as usize + 1),
        };
        assert!(read_control(encode(&long_name)).0.is_err());
    }

    #[test]
    fn a_cbor_length_past_the_input_is_an_error_not_an_allocation() {
        // Variant `Stat` holding a map whose `name` is a text string that
        // claims 2^62 bytes; and a byte string claiming as much.
        let mut text = vec![
            0xa1, 0x64, b'S', b't', b'a', b't', 0xa1, 0x64, b'n', b'a', b'm', b'e',
        ];
        text.push(0x7b);
        text.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(read_control(text).0.is_err());
        let mut bytes = vec![0x5b];
        bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let (req, resp) = read_control(bytes);
        assert!(req.is_err() && resp.is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes from a peer: a control message or an error, never a
        /// panic.
        #[test]
        fn control_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_control(bytes);
        }

        /// Any bytes at all: a header, a reply or an error, never a panic,
        /// and never an allocation past the frame limit.
        #[test]
        fn header_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = block_on(read_header::<BlobRequest, _>(&mut Cursor::new(bytes.clone())));
            let _ = block_on(read_header::<BlobReply, _>(&mut Cursor::new(bytes.clone())));
            let _ = decode_header::<BlobRequest>(&bytes);
            let _ = decode_header::<BlobReply>(&bytes);
            let _ = decode_header::<ListFrame>(&bytes);
        }

        /// A frame whose announced length is over the limit is refused
        /// whatever follows it.
        #[test]
        fn oversize_lengths_are_refused(len in (MAX_HEADER as u32 + 1).., tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = len.to_be_bytes().to_vec();
            buf.extend_from_slice(&tail);
            let r = block_on(read_frame(&mut Cursor::new(buf), MAX_HEADER));
            let is_too_large = matches!(r, Err(FrameError::TooLarge { .. }));
            prop_assert!(is_too_large);
        }

        /// Every frame written is read back whole.
        #[test]
        fn frames_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut buf = Vec::new();
            block_on(write_frame(&mut buf, &data)).unwrap();
            let back = block_on(read_frame(&mut Cursor::new(buf), MAX_CHUNK)).unwrap();
            prop_assert_eq!(&back[..], &data[..]);
        }
    }
}
