//! The metrics listener (`metrics.listener=HOST:PORT`): a small HTTP/1.1
//! server on shard 0 answering
//!
//! - `GET /metrics`: the scrape ([`super::exposition`]);
//! - `GET /live`: 200 while the process serves;
//! - `GET /ready`: 200 once the broker has started, registered with the
//!   controller and has current metadata, 503 otherwise (and while it
//!   stops), for load balancers, systemd or Kubernetes probes.
//!
//! Anything else gets 404, other methods 405. A request head is at most
//! [`REQUEST_MAX_BYTES`] and must arrive within [`REQUEST_TIMEOUT`]; at
//! most [`CONNECTIONS_MAX`] connections are served at once (more are
//! answered 503 and closed); each answer closes its connection. The
//! server is a hand-written loop rather than an HTTP crate because it
//! needs three GET paths on glommio's sockets, and the crates that would
//! serve them bring a second async runtime.

use crate::idle::Workers;
use crate::shard::Shard;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Largest request head accepted.
pub const REQUEST_MAX_BYTES: usize = 8 * 1024;
/// How long a client has to send its request head, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 16;

/// Serves the metrics listener until the task is dropped; `encoder`
/// encodes the scrapes.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener, encoder: Rc<Workers>) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (shard, open, encoder) = (Rc::clone(&shard), Rc::clone(&open), Rc::clone(&encoder));
        glommio::spawn_local(async move {
            let mut stream = stream;
            if open.get() >= CONNECTIONS_MAX {
                let _ = glommio::timer::timeout(REQUEST_TIMEOUT, async {
                    respond(&mut stream, 503, "text/plain", b"too many connections\n").await;
                    Ok(())
                })
                .await;
                return;
            }
            open.set(open.get() + 1);
            let _ = glommio::timer::timeout(REQUEST_TIMEOUT, async {
                handle(&shard, &encoder, &mut stream).await;
                Ok(())
            })
            .await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// Why a request head is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// No complete head yet.
    Incomplete,
    /// Not `METHOD PATH HTTP/1.x`.
    Malformed,
}

/// Parses the request line once the whole head (up to the blank line)
/// is in `buf`.
pub fn parse_head(buf: &[u8]) -> Result<RequestLine<'_>, HeadError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HeadError::Incomplete)?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed)?;
    let line = head.lines().next().ok_or(HeadError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(RequestLine { method, path })
}

async fn handle(shard: &Rc<Shard>, encoder: &Workers, stream: &mut TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        match parse_head(&buf) {
            Ok(line) => break (line.method.to_string(), line.path.to_string()),
            Err(HeadError::Malformed) => {
                respond(stream, 400, "text/plain", b"bad request\n").await;
                return;
            }
            Err(HeadError::Incomplete) if buf.len() >= REQUEST_MAX_BYTES => {
                respond(stream, 431, "text/plain", b"request head too large\n").await;
                return;
            }
            Err(HeadError::Incomplete) => {}
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if method != "GET" && method != "HEAD" {
        respond(stream, 405, "text/plain", b"only GET\n").await;
        return;
    }
    let head_only = method == "HEAD";
    let (status, content_type, body) = match path.as_str() {
        "/metrics" => {
            let (shards, cluster) = super::gather(shard).await;
            let per_partition = shard.broker.config.get("metrics.partition.level") == Some("true");
            // Encoding takes about 2 ms of CPU for 16 partitions, which on
            // the shard's thread every request behind it waited out: a
            // scrape a second raised produce's p99 at 10k msg/s from 2.3
            // to 4.0 ms. On the shard's blocking thread, at normal
            // priority, it still took turns with the shards on a busy
            // two-core machine (+11.6% at p99); an idle-priority thread
            // gives way to them.
            let body = encoder
                .run(move |_| {
                    super::exposition::encode(super::exposition::Scrape {
                        shards,
                        cluster,
                        process: super::process_sample(),
                        per_partition,
                    })
                    .into_bytes()
                })
                .await;
            match body {
                Some(body) => (200, super::exposition::CONTENT_TYPE, body),
                None => (500, "text/plain", b"encoding the scrape failed\n".to_vec()),
            }
        }
        "/live" => (200, "text/plain", b"live\n".to_vec()),
        "/ready" => match readiness(shard) {
            Ok(()) => (200, "text/plain", b"ready\n".to_vec()),
            Err(why) => (
                503,
                "text/plain",
                format!("not ready: {why}\n").into_bytes(),
            ),
        },
        _ => (404, "text/plain", b"not found\n".to_vec()),
    };
    if head_only {
        respond_head(stream, status, content_type, body.len()).await;
    } else {
        respond(stream, status, content_type, &body).await;
    }
}

/// Whether the broker should receive traffic, and if not why.
fn readiness(shard: &Rc<Shard>) -> Result<(), &'static str> {
    let broker = &shard.broker;
    if broker.stop_requested() || broker.stopping() {
        return Err("stopping");
    }
    if !broker.ready() {
        return Err("starting");
    }
    if !broker.leased() {
        return Err("no heartbeat answered by the controller within a session");
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn respond_head(stream: &mut TcpStream, status: u16, content_type: &str, len: usize) {
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{allow}Connection: close\r\n\r\n",
        reason(status)
    );
    let _ = stream.write_all(head.as_bytes()).await;
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    respond_head(stream, status, content_type, body.len()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_once_the_head_is_complete() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Err(HeadError::Incomplete)
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(RequestLine {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(parse_head(b"GET\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(
            parse_head(b"GET metrics HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / SPDY/3\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"\xff\xfe / HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }
}
