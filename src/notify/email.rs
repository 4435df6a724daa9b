//! E-mail over SMTP: TLS from the first byte, STARTTLS (required unless
//! the server is this host), or plain text only where the configuration
//! allowed it; the server's certificate checked against the system's roots
//! or the target's `ca_file`.

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls as Mode, TlsParameters};
use lettre::{SmtpTransport, Transport};

use super::message::Message;
use crate::settings::{Email, Tls};

pub fn send(email: &Email, message: &Message, timeout: Duration) -> Result<()> {
    let server = format!("smtp {}:{}", email.host, email.port);
    let mut builder = lettre::Message::builder()
        .from(email.from.parse().with_context(|| format!("sender {:?}", email.from))?)
        .subject(&message.title)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &email.to {
        builder = builder.to(to.parse().with_context(|| format!("recipient {to:?}"))?);
    }
    let mail = builder.body(message.full()).context("composing the e-mail")?;
    let params = || -> Result<TlsParameters> {
        let mut params = TlsParameters::builder(email.host.clone());
        if let Some(file) = &email.ca_file {
            let pem = std::fs::read(file).with_context(|| format!("reading ca_file {}", file.display()))?;
            params = params.add_root_certificate(
                Certificate::from_pem(&pem)
                    .with_context(|| format!("ca_file {}: not a PEM certificate", file.display()))?,
            );
        }
        params.build_rustls().context("setting up TLS")
    };
    let mode = match email.tls {
        Tls::Implicit => Mode::Wrapper(params()?),
        Tls::Required => Mode::Required(params()?),
        Tls::Opportunistic => Mode::Opportunistic(params()?),
        Tls::Off => Mode::None,
    };
    let mut transport = SmtpTransport::builder_dangerous(&email.host).port(email.port).tls(mode).timeout(Some(timeout));
    if let Some(user) = &email.user {
        let password = match &email.password {
            Some(token) => token.read()?,
            None => crate::redact::Secret::new(""),
        };
        transport = transport.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    transport.build().send(&mail).map_err(|e| anyhow::anyhow!("{server}: {}", crate::redact::scrub(&e.to_string())))?;
    Ok(())
}
