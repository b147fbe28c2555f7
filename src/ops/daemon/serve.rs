//! The read-only status server (tiny_http): `/` the page, `/api/status` the JSON,
//! `/metrics` the Prometheus text. Requests are answered on the daemon's calling thread
//! between its other work; tiny_http's own threads only accept and read them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, Server};

use super::status::Status;
use crate::error::Error;

/// Opens the listener. A non-loopback address needs `public` (`--listen-public`).
pub fn listen(addr: SocketAddr, public: bool) -> Result<Server, Error> {
    if !addr.ip().is_loopback() && !public {
        return Err(Error::Usage(format!(
            "--listen {addr} is not a loopback address; add --listen-public to serve the status page on it"
        )));
    }
    Server::http(addr)
        .map_err(|e| Error::Refused(format!("cannot listen on {addr} for the status page: {e}")))
}

/// Answers requests until `wait` has passed.
pub fn answer_for(server: &Server, status: &Status, wait: Duration) {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match server.recv_timeout(left) {
            Ok(Some(req)) => answer(req, status),
            Ok(None) | Err(_) => return,
        }
        if Instant::now() >= until {
            return;
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// One request: GET or HEAD of a known path; anything else is 404 or 405.
fn answer(req: Request, status: &Status) {
    if !matches!(req.method(), Method::Get | Method::Head) {
        let r = Response::from_string("only GET and HEAD\n")
            .with_status_code(405)
            .with_header(header("Allow", "GET, HEAD"));
        let _ = req.respond(r);
        return;
    }
    let path = req.url().split('?').next().unwrap_or("/").to_string();
    let (code, kind, body) = match path.as_str() {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", super::page::html(status)),
        "/api/status" => (
            200,
            "application/json",
            serde_json::to_string_pretty(status).unwrap_or_default(),
        ),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::text(status),
        ),
        "/favicon.ico" => (204, "text/plain", String::new()),
        _ => (404, "text/plain", format!("no such page: {path}\n")),
    };
    let r = Response::from_string(body)
        .with_status_code(code)
        .with_header(header("Content-Type", kind))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        ));
    let _ = req.respond(r);
}
