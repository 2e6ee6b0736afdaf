//! Requests written byte by byte on raw connections, signed with the
//! loadgen's SigV4: for tests that need what no SDK sends on purpose
//! (withheld bodies, pipelined requests, half a head, a body that stalls).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use shardgate_loadgen::mix::error_code;
use shardgate_loadgen::sigv4::{STREAMING_PAYLOAD, Signer, UNSIGNED_PAYLOAD, chunked_length};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn code(&self) -> String {
        error_code(&self.body)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// One client connection, read and written byte by byte.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// A second handle on the socket (a writer thread's).
    pub fn stream_clone(&self) -> TcpStream {
        self.stream.try_clone().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more; false at the end of the stream (EOF or reset).
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    /// The next response (Content-Length framed; HEAD is not used), or
    /// None if the connection ends before one starts.
    pub fn response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill() {
                assert!(
                    self.buf.is_empty(),
                    "connection ended inside a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        self.buf.drain(..head_end + 4);
        while self.buf.len() < len {
            assert!(self.fill(), "connection ended inside a response body");
        }
        let body = self.buf.drain(..len).collect();
        Some(Response {
            status,
            headers,
            body,
        })
    }
}

/// A request head: the signed headers, then `unsigned` ones, then the
/// blank line.
pub fn head(
    method: &str,
    path: &str,
    signed: &[(String, String)],
    unsigned: &[(&str, String)],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in signed {
        out += &format!("{k}: {v}\r\n");
    }
    for (k, v) in unsigned {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    out.into_bytes()
}

/// A signed request without a body.
pub fn bodiless(signer: &Signer, method: &str, path: &str) -> Vec<u8> {
    let signed = signer.sign(method, path, "", &[], UNSIGNED_PAYLOAD);
    head(method, path, &signed.headers, &[])
}

/// A whole signed PUT (unsigned payload).
pub fn put(signer: &Signer, path: &str, body: &[u8]) -> Vec<u8> {
    let (mut out, body) = put_parts(signer, path, body, &[], false, false);
    out.extend_from_slice(&body);
    out
}

/// A signed PUT as (head, body): plain or aws-chunked (64 KiB chunks),
/// with or without `Expect: 100-continue`.
pub fn put_parts(
    signer: &Signer,
    path: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    chunked: bool,
    expect: bool,
) -> (Vec<u8>, Vec<u8>) {
    const CHUNK: usize = 64 * 1024;
    let decoded = body.len().to_string();
    let mut extra = extra.to_vec();
    let payload = if chunked {
        extra.push(("x-amz-decoded-content-length", &decoded));
        extra.push(("content-encoding", "aws-chunked"));
        STREAMING_PAYLOAD
    } else {
        UNSIGNED_PAYLOAD
    };
    let mut signed = signer.sign("PUT", path, "", &extra, payload);
    let (length, body) = if chunked {
        let encoded = signed.chunks.encode(body, CHUNK);
        (chunked_length(body.len(), CHUNK), encoded)
    } else {
        (body.len(), body.to_vec())
    };
    assert_eq!(length, body.len());
    let mut unsigned = vec![("content-length", length.to_string())];
    if expect {
        unsigned.push(("expect", "100-continue".into()));
    }
    (head("PUT", path, &signed.headers, &unsigned), body)
}
