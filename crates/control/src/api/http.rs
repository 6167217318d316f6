//! Just enough HTTP/1.1 (RFC 9112) for a local control API: one request
//! per connection, `Content-Length` bodies, no chunked requests.
//!
//! The peer is a local process, but not a trusted one: every length is
//! bounded ([`MAX_HEAD`], [`MAX_BODY`]) and a malformed request is an
//! error the server answers with 400, never a panic.

use std::io::{BufRead, BufReader, Read, Write};

/// Longest request line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, ...
    pub method: String,
    /// The path without the query (`/v1/vm/inspect/cpu0`), percent-decoded.
    pub path: String,
    /// `key=value` pairs of the query string, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed or closed early.
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    /// The request is not HTTP/1.x as we accept it.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Head or body is over the limit.
    #[error("request too large: {0}")]
    TooLarge(String),
}

/// Reads one request from `stream`.
pub fn read_request(stream: &mut impl Read) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD + 1 - before) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(HttpError::Malformed(
                "the connection closed mid-request".into(),
            ));
        }
        if head.len() > MAX_HEAD {
            return Err(HttpError::TooLarge(format!("head over {MAX_HEAD} bytes")));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let text = std::str::from_utf8(&head)
        .map_err(|_| HttpError::Malformed("the head is not UTF-8".into()))?;
    let mut lines = text.lines();
    let start = lines.next().unwrap_or_default();
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!("bad request line {start:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed(format!("bad method {method:?}")));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = split_target(target)?;
    let mut request = Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(HttpError::Malformed(
            "chunked request bodies are not accepted".into(),
        ));
    }
    if let Some(len) = request.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Malformed(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(HttpError::TooLarge(format!(
                "body of {len} bytes, limit {MAX_BODY}"
            )));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

fn split_target(target: &str) -> Result<(String, Vec<(String, String)>), HttpError> {
    if !target.starts_with('/') {
        return Err(HttpError::Malformed(format!(
            "bad request target {target:?}"
        )));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect::<Result<_, HttpError>>()?;
    Ok((percent_decode(path)?, query))
}

/// Decodes `%XX` escapes (and `+` as a space is NOT applied: paths and
/// our queries never use it).
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| HttpError::Malformed(format!("bad escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::Malformed(format!("{s:?} is not UTF-8")))
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// `Allow`: the methods the path has, which RFC 9110 section 15.5.6
    /// asks of every 405.
    pub allow: Option<String>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            allow: None,
        }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            allow: None,
        }
    }

    /// 204, no body.
    pub fn no_content() -> Self {
        Response {
            status: 204,
            content_type: "application/json",
            body: Vec::new(),
            allow: None,
        }
    }

    /// 405, with the `Allow` header listing the methods `allow` the path
    /// has (`"GET, PUT"`).
    pub fn method_not_allowed(allow: String, message: impl Into<String>) -> Self {
        Response {
            allow: Some(allow),
            ..Self::error(405, message)
        }
    }

    /// Writes the response, closing the exchange (`Connection: close`).
    /// A 204 has neither body nor `Content-Length` (RFC 9110 section
    /// 8.6).
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            head.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            ));
        }
        if let Some(allow) = &self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut message = head.into_bytes();
        if self.status != 204 {
            message.extend_from_slice(&self.body);
        }
        out.write_all(&message)?;
        out.flush()
    }
}

/// The reason phrase of `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A parsed response (the client's side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Reads a response head, and the body unless the status is 101 (the
/// stream then carries the upgraded protocol) or 204 (which has none).
pub fn read_response<R: Read>(reader: &mut BufReader<R>) -> Result<ClientResponse, HttpError> {
    let mut head = Vec::new();
    loop {
        let n = reader
            .by_ref()
            .take((MAX_HEAD + 1 - head.len()) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(HttpError::Malformed(
                "the server closed the connection".into(),
            ));
        }
        if head.len() > MAX_HEAD {
            return Err(HttpError::TooLarge("response head".into()));
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed("bad status line".into()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = Vec::new();
    if status != 101 && status != 204 {
        match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, len)) => {
                let len: usize = len
                    .parse()
                    .map_err(|_| HttpError::Malformed("bad Content-Length".into()))?;
                body.resize(len, 0);
                reader.read_exact(&mut body)?;
            }
            None => {
                reader.read_to_end(&mut body)?;
            }
        }
    }
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, HttpError> {
        read_request(&mut raw.as_bytes())
    }

    #[test]
    fn a_request_with_query_and_body_parses() {
        let r = parse(
            "PUT /v1/vm/inspect/cpu0%2Fregs?x=1&format=json HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v1/vm/inspect/cpu0/regs");
        assert_eq!(r.query("format"), Some("json"));
        assert_eq!(r.query("x"), Some("1"));
        assert_eq!(r.header("host"), Some("x"));
        assert_eq!(r.body, b"body");
    }

    #[test]
    fn malformed_and_oversized_requests_are_errors() {
        for raw in [
            "",
            "GET\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET nopath HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /%zz HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(parse(raw).is_err(), "{raw:?} parsed");
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&big), Err(HttpError::TooLarge(_))));
        let body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(parse(&body), Err(HttpError::TooLarge(_))));
    }

    #[test]
    fn responses_round_trip_through_the_client_parser() {
        let mut wire = Vec::new();
        Response::error(409, "the VM is running")
            .write_to(&mut wire)
            .unwrap();
        let r = read_response(&mut BufReader::new(wire.as_slice())).unwrap();
        assert_eq!(r.status, 409);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "the VM is running");
    }

    #[test]
    fn no_content_has_no_length_and_a_405_says_what_is_allowed() {
        let mut wire = Vec::new();
        Response::no_content().write_to(&mut wire).unwrap();
        let text = String::from_utf8(wire.clone())
            .unwrap()
            .to_ascii_lowercase();
        assert!(!text.contains("content-length"), "{text}");
        let r = read_response(&mut BufReader::new(wire.as_slice())).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        let mut wire = Vec::new();
        Response::method_not_allowed("GET, PUT".into(), "no")
            .write_to(&mut wire)
            .unwrap();
        let r = read_response(&mut BufReader::new(wire.as_slice())).unwrap();
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "GET, PUT".into())));
    }
}
