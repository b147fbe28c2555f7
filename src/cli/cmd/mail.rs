//! `vault mail`: one mail through the SMTP settings.

use super::super::*;

/// `vault mail`.
pub(in crate::cli) fn mail(
    out: &Out,
    to: &[String],
    subject: &str,
    body: &Option<String>,
    mail: &MailFlags,
) -> Result<Outcome, Error> {
    let smtp = smtp_settings(mail)?;
    let body = match body {
        Some(b) => b.clone(),
        None => {
            let mut b = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut b)
                .map_err(|e| Error::Usage(format!("cannot read the body from stdin: {e}")))?;
            b
        }
    };
    vault::ops::mail::send(&smtp, to, subject, &body).map_err(|e| match e {
        vault::ops::mail::MailError::Address(..) | vault::ops::mail::MailError::Url(_) => {
            Error::Usage(e.to_string())
        }
        other => Error::Refused(other.to_string()),
    })?;
    if out.json {
        out.json(&serde_json::json!({ "sent": true, "to": to, "subject": subject }))?;
    }
    out.note(&format!("mail sent to {}", to.join(", ")));
    Ok(Outcome::Done)
}
