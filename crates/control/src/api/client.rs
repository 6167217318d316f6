//! The client side of the API, for the CLI verbs (`alcazar ls`, `pause`,
//! `console`, ...) and tests.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::http::{read_response, ClientResponse, HttpError};

/// Why a request failed before an HTTP status came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// Writing the request failed.
    #[error("sending the request: {0}")]
    Io(#[from] std::io::Error),
}

/// How long a request may take (a clean stop waits for the guest).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })
}

/// Sends one request with an optional JSON body and returns the response.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> Result<ClientResponse, ClientError> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    // One buffer, one write: the server sees the whole request at once.
    let mut message = format!(
        "{method} {target} HTTP/1.1\r\nHost: alcazar\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(body.as_bytes());
    let sent = stream.write_all(&message).and_then(|()| stream.flush());
    // A server may answer before it has read the whole request (413 for
    // a body over its limit) and close: the write then fails, but the
    // answer is waiting to be read.
    match read_response(&mut BufReader::new(stream)) {
        Ok(response) => Ok(response),
        Err(e) => match sent {
            Err(io) => Err(io.into()),
            Ok(()) => Err(e.into()),
        },
    }
}

/// An open console stream.
#[derive(Debug)]
pub struct ConsoleConnection {
    /// Carries guest output in and keystrokes out.
    pub stream: UnixStream,
    /// Guest output that arrived together with the response head: show
    /// it before reading `stream`.
    pub early: Vec<u8>,
}

/// Opens the console stream (`from`: `attach`, `start` or `end`). An
/// error response comes back as the inner `Err` with its message.
pub fn console(
    socket: &Path,
    from: &str,
) -> Result<Result<ConsoleConnection, String>, ClientError> {
    let mut stream = connect(socket)?;
    write!(
        stream,
        "GET /v1/vm/console?from={from} HTTP/1.1\r\nHost: alcazar\r\nConnection: Upgrade\r\nUpgrade: alcazar-console\r\n\r\n"
    )?;
    stream.flush()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let response = read_response(&mut reader)?;
    if response.status != 101 {
        return Ok(Err(error_message(&response)));
    }
    // Output that arrived in the same read as the head sits in the
    // reader's buffer.
    let early = reader.buffer().to_vec();
    Ok(Ok(ConsoleConnection { stream, early }))
}

/// The `error` member of an error response, or its status.
pub fn error_message(response: &ClientResponse) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP status {}", response.status))
}
