//! A minimal HTTP/1.1 client, one request per connection, and checks of
//! the gateway's JSON answers.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "HTTP {} body is not JSON ({error}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The JSON body of a success.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected HTTP 200, got: {}", self.text());
        self.json()
    }
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Response, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    http_raw(addr, method, path, token, &body).await
}

/// [`http`] with the body sent as given, JSON or not (`""` sends none).
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Response, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect {addr}: {error}"))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\naccept: application/json\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            request.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("send: {error}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|error| format!("receive: {error}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| format!("{method} {path}: no complete answer in 15 s"))?
}

pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|error| error.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|error| error.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|error| format!("bad chunk size {size_text:?}: {error}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Requests

pub fn create_user_body(code: &str, app_id: &str, device_id: &str, form_factor: &str) -> Value {
    json!({
        "auth_code": code,
        "app_id": app_id,
        "app": {"app_version": "1.4.0", "sdk_version": "2.0.1", "bundle_id": "com.example.app"},
        "device": {
            "device_id": device_id,
            "platform": "PLATFORM_IOS",
            "form_factor": form_factor,
            "model": "iPhone15,2",
            "os_version": "17.1"
        }
    })
}

/// A failure's JSON body (`google.rpc.Status`): the HTTP status must be
/// `http_status` and the gRPC code `grpc_code`.
pub fn assert_error(response: &Response, http_status: &[u16], grpc_code: i64) -> Value {
    assert!(
        http_status.contains(&response.status),
        "expected HTTP {http_status:?}, got {}: {}",
        response.status,
        response.text()
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "an error body is JSON: {:?}",
        response.headers
    );
    let body = response.json();
    assert_eq!(body["code"], grpc_code, "gRPC code in {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a readable message in {body}"
    );
    body
}

// ---------------------------------------------------------------------------
// The test
