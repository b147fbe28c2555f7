//! `vault mail` and mail alerts: UTF-8 messages through an SMTP server (postfix on loopback by
//! default), with STARTTLS or TLS and authentication when asked.
//!
//! Promises: subject, body and display names are encoded for any language (RFC 2047 headers,
//! UTF-8 body); every SMTP step is bounded by the timeout; a refused recipient or an unreachable
//! server is one error naming it; the password is never printed. [`MailNotifier`] delivers alert
//! events; its failures are returned for the caller to report as warnings.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::alert::{Event, Notifier};

/// How to reach the SMTP server. `Debug` hides the password.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `smtp://host[:port]` (default port 25; 465 is usual with `tls`).
    pub url: String,
    /// Upgrade with STARTTLS (required: refuses a server that cannot).
    pub starttls: bool,
    /// TLS from the first byte (SMTPS).
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. a self-signed server's.
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
    pub from: String,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca", &self.ca)
            .finish()
    }
}

impl Default for SmtpSettings {
    fn default() -> SmtpSettings {
        SmtpSettings {
            url: "smtp://127.0.0.1:25".into(),
            starttls: false,
            tls: false,
            user: None,
            password: None,
            ca: None,
            timeout: Duration::from_secs(30),
            from: "vault <vault@localhost>".into(),
        }
    }
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad address '{0}': {1}")]
    Address(String, String),
    #[error("bad SMTP URL '{0}': expected smtp://host[:port]")]
    Url(String),
    #[error("cannot read CA certificate {0}: {1}")]
    Ca(String, String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("SMTP server {server}: {what}")]
    Smtp { server: String, what: String },
}

fn host_port(url: &str, tls: bool) -> Result<(String, u16), MailError> {
    let rest = url
        .strip_prefix("smtp://")
        .or_else(|| url.strip_prefix("smtps://"))
        .ok_or_else(|| MailError::Url(url.into()))?
        .trim_end_matches('/');
    let default = if tls { 465 } else { 25 };
    let (h, p) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| MailError::Url(url.into()))?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match p {
        Some(p) => p.parse().map_err(|_| MailError::Url(url.into()))?,
        None => default,
    };
    if h.is_empty() {
        return Err(MailError::Url(url.into()));
    }
    Ok((h.to_string(), port))
}

fn mailbox(s: &str) -> Result<Mailbox, MailError> {
    s.parse::<Mailbox>()
        .map_err(|e| MailError::Address(s.to_string(), e.to_string()))
}

/// True when a password would cross the network unencrypted: credentials, no TLS, and a server
/// that is not this machine.
fn plaintext_auth_refused(host: &str, has_user: bool, tls: bool) -> bool {
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    has_user && !tls && !loopback
}

/// Sends one UTF-8 plain-text mail to every recipient.
pub fn send(s: &SmtpSettings, to: &[String], subject: &str, body: &str) -> Result<(), MailError> {
    // smtps:// is SMTP over TLS from the first byte, whatever the flags say.
    let wrapper = s.tls || s.url.starts_with("smtps://");
    let (host, port) = host_port(&s.url, wrapper)?;
    if plaintext_auth_refused(&host, s.user.is_some(), wrapper || s.starttls) {
        return Err(MailError::Smtp {
            server: format!("{host}:{port}"),
            what: "refusing to send the SMTP password unencrypted: add --starttls (or --tls / smtps://)"
                .into(),
        });
    }
    let server = format!("{host}:{port}");
    let mut b = Message::builder().from(mailbox(&s.from)?).subject(subject);
    for t in to {
        b = b.to(mailbox(t)?);
    }
    let msg = b
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| MailError::Build(e.to_string()))?;

    let mut t = SmtpTransport::builder_dangerous(host.clone())
        .port(port)
        .timeout(Some(s.timeout));
    if wrapper || s.starttls {
        let mut p = TlsParameters::builder(host.clone());
        if let Some(ca) = &s.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| MailError::Ca(ca.display().to_string(), e.to_string()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| MailError::Ca(ca.display().to_string(), e.to_string()))?;
            p = p.add_root_certificate(cert);
        }
        let p = p.build().map_err(|e| MailError::Smtp {
            server: server.clone(),
            what: format!("TLS setup: {e}"),
        })?;
        t = t.tls(if wrapper {
            Tls::Wrapper(p)
        } else {
            Tls::Required(p)
        });
    }
    if let Some(u) = &s.user {
        t = t.credentials(Credentials::new(
            u.clone(),
            s.password.clone().unwrap_or_default(),
        ));
    }
    let transport = t.build();
    transport.send(&msg).map_err(|e| MailError::Smtp {
        server,
        what: if timed_out(&e) {
            format!(
                "timed out after {} waiting for the server (--smtp-timeout)",
                crate::time::human_duration(s.timeout)
            )
        } else {
            describe(&e)
        },
    })?;
    Ok(())
}

/// True when the error is a socket timeout (a read or write timeout shows as EAGAIN).
fn timed_out(e: &lettre::transport::smtp::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// One line saying what the SMTP error was, without secrets.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    let mut line = parts.join(": ").replace('\n', " ");
    if e.is_permanent() && line.contains("535") {
        line = format!("authentication failed ({line})");
    }
    line
}

/// Delivers alert events by mail.
#[derive(Clone, Debug)]
pub struct MailNotifier {
    pub smtp: SmtpSettings,
    pub to: Vec<String>,
}

impl Notifier for MailNotifier {
    fn notify(&self, events: &[Event]) -> Result<(), String> {
        for e in events {
            let body = format!(
                "{}\n\n{}\n",
                e.summary(),
                serde_json::to_string_pretty(e).unwrap_or_default()
            );
            send(&self.smtp, &self.to, &e.subject(), &body).map_err(|err| err.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_cross_the_network_in_clear() {
        assert!(plaintext_auth_refused("mail.example.org", true, false));
        assert!(!plaintext_auth_refused("mail.example.org", true, true));
        assert!(!plaintext_auth_refused("mail.example.org", false, false));
        assert!(!plaintext_auth_refused("127.0.0.1", true, false));
        assert!(!plaintext_auth_refused("::1", true, false));
        assert!(!plaintext_auth_refused("localhost", true, false));
    }

    #[test]
    fn urls() {
        assert_eq!(
            host_port("smtp://127.0.0.1", false).unwrap(),
            ("127.0.0.1".into(), 25)
        );
        assert_eq!(host_port("smtp://127.0.0.1:2525", false).unwrap().1, 2525);
        assert_eq!(host_port("smtps://mail.example", true).unwrap().1, 465);
        assert_eq!(
            host_port("smtp://[::1]:26", false).unwrap(),
            ("::1".into(), 26)
        );
        assert!(host_port("http://x", false).is_err());
        assert!(host_port("smtp://:25", false).is_err());
    }
}
