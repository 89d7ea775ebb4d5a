//! Email over SMTP: the MIME message (multipart text and HTML, RFC 8058 unsubscribe
//! headers, a stable Message-ID) and pooled transports per provider, with STARTTLS or
//! implicit TLS through rustls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Map, Value};
use wedsync_core::id::ProviderId;
use wedsync_delivery::ssrf::SsrfPolicy;
use wedsync_store::notify::ProviderWork;

/// One email, ready to build.
#[derive(Debug, Clone)]
pub struct Email {
    /// `Name <address>` or an address.
    pub from: String,
    /// The recipient's display name.
    pub to_name: Option<String>,
    /// The recipient's address.
    pub to: String,
    /// Reply-To.
    pub reply_to: Option<String>,
    /// Subject (one line).
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: Option<String>,
    /// Extra headers (List-Unsubscribe, …).
    pub headers: Vec<(String, String)>,
    /// The Message-ID, without angle brackets; stable per notification so a retried
    /// send is recognisably the same message.
    pub message_id: String,
}

/// How an SMTP send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpResult {
    /// The server accepted the message; its reply (often with a queue id).
    Accepted(String),
    /// Try again (4xx, connection problems, timeouts).
    Transient(String),
    /// The server refused it for good (5xx).
    Permanent(String),
}

/// Builds the MIME message: `multipart/alternative` with text then HTML when there is
/// HTML, plain text otherwise.
pub fn build(email: &Email) -> Result<Message, String> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| format!("from `{}`: {e}", email.from))?;
    let to = Mailbox::new(
        email.to_name.clone(),
        email.to.parse().map_err(|e| format!("to: {e}"))?,
    );
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(format!("<{}>", email.message_id)));
    if let Some(r) = &email.reply_to {
        builder = builder.reply_to(r.parse().map_err(|e| format!("reply_to: {e}"))?);
    }
    for (name, value) in &email.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| format!("header name `{name}` is not valid"))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    let message = match &email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(email.text.clone()),
        ),
    };
    message.map_err(|e| e.to_string())
}

/// The SMTP provider's settings, read from its configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    host: String,
    port: u16,
    tls: String,
    username: Option<String>,
    password: Option<String>,
    ca_pem: Option<String>,
    timeout_ms: u64,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

const CONFIG_FIELDS: &[&str] = &[
    "host",
    "port",
    "tls",
    "username",
    "from",
    "ca_pem",
    "timeout_ms",
];
const SECRET_FIELDS: &[&str] = &["password"];

/// Checks an SMTP provider's settings as they are saved; errors name the field.
pub fn validate(
    config: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Result<(), Vec<(String, String)>> {
    let mut errors = Vec::new();
    for k in config.keys() {
        if !CONFIG_FIELDS.contains(&k.as_str()) {
            errors.push((format!("config.{k}"), "unknown field".to_owned()));
        }
    }
    for k in secrets.keys() {
        if !SECRET_FIELDS.contains(&k.as_str()) {
            errors.push((format!("secrets.{k}"), "unknown field".to_owned()));
        }
    }
    if config
        .get("host")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(("config.host".into(), "required".into()));
    }
    if config
        .get("from")
        .and_then(Value::as_str)
        .is_none_or(|f| f.parse::<Mailbox>().is_err())
    {
        errors.push((
            "config.from".into(),
            "required: a sender like `Studio <hello@studio.example>`".into(),
        ));
    }
    if let Some(p) = config.get("port")
        && p.as_u64().is_none_or(|p| p == 0 || p > 65535)
    {
        errors.push(("config.port".into(), "a port number".into()));
    }
    if let Some(t) = config.get("tls")
        && !matches!(t.as_str(), Some("starttls" | "tls" | "none"))
    {
        errors.push(("config.tls".into(), "one of starttls, tls, none".into()));
    }
    if config.contains_key("username") != secrets.contains_key("password") {
        errors.push((
            "secrets.password".into(),
            "username and password go together".into(),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn settings_of(p: &ProviderWork) -> SmtpSettings {
    let s = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let tls = s(&p.config, "tls").unwrap_or_else(|| "starttls".into());
    let default_port = match tls.as_str() {
        "tls" => 465,
        "none" => 25,
        _ => 587,
    };
    SmtpSettings {
        host: s(&p.config, "host").unwrap_or_default(),
        port: p
            .config
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default_port),
        tls,
        username: s(&p.config, "username"),
        password: s(&p.secrets, "password"),
        ca_pem: s(&p.config, "ca_pem"),
        timeout_ms: p
            .config
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .unwrap_or(30_000),
    }
}

type Transport = AsyncSmtpTransport<Tokio1Executor>;

fn transport(s: &SmtpSettings, ip: std::net::IpAddr) -> Result<Transport, String> {
    let tls_parameters = || {
        let mut b = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            let cert = lettre::transport::smtp::client::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| format!("config.ca_pem: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build().map_err(|e| e.to_string())
    };
    let tls = match s.tls.as_str() {
        "none" => Tls::None,
        "tls" => Tls::Wrapper(tls_parameters()?),
        _ => Tls::Required(tls_parameters()?),
    };
    let mut builder = Transport::builder_dangerous(ip.to_string())
        .port(s.port)
        .tls(tls)
        .timeout(Some(Duration::from_millis(s.timeout_ms)))
        .pool_config(PoolConfig::new().max_size(8));
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(builder.build())
}

/// SMTP transports, one pool per provider, rebuilt when its settings or its server's checked
/// address change.
pub struct SmtpPool {
    transports: Mutex<HashMap<ProviderId, (SmtpSettings, std::net::IpAddr, Transport)>>,
    policy: SsrfPolicy,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpPool").finish_non_exhaustive()
    }
}

impl SmtpPool {
    /// A pool that refuses SMTP hosts resolving into refused address space.
    pub fn new(policy: SsrfPolicy) -> Self {
        Self {
            transports: Mutex::default(),
            policy,
        }
    }

    /// The transport of provider `p` connecting to `ip`, the address just checked: connecting
    /// by name would resolve it again, and a DNS answer that changed in between (rebinding)
    /// could reach an address the policy refuses. TLS still verifies the configured name.
    fn get(&self, p: &ProviderWork, ip: std::net::IpAddr) -> Result<Transport, String> {
        let settings = settings_of(p);
        let mut map = self
            .transports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, at, t)) = map.get(&p.id)
            && *s == settings
            && *at == ip
        {
            return Ok(t.clone());
        }
        let t = transport(&settings, ip)?;
        map.insert(p.id, (settings, ip, t.clone()));
        Ok(t)
    }

    /// Sends `email` through provider `p`.
    pub async fn send(&self, p: &ProviderWork, email: &Email) -> SmtpResult {
        let settings = settings_of(p);
        // Every address the name has must be allowed; the connection goes to them in the
        // resolver's order, the next one only when the last could not be reached at all.
        let addrs: Vec<std::net::IpAddr> =
            match tokio::net::lookup_host((settings.host.as_str(), settings.port)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(e) => {
                    return SmtpResult::Transient(format!("resolving {}: {e}", settings.host));
                }
            };
        for ip in &addrs {
            if let Err(refusal) = self.policy.check_ip(*ip) {
                return SmtpResult::Permanent(format!("smtp host refused: {refusal}"));
            }
        }
        let message = match build(email) {
            Ok(m) => m,
            Err(e) => return SmtpResult::Permanent(format!("building the message: {e}")),
        };
        let mut outcome =
            SmtpResult::Transient(format!("resolving {}: no addresses", settings.host));
        for ip in addrs {
            let transport = match self.get(p, ip) {
                Ok(t) => t,
                Err(e) => return SmtpResult::Permanent(e),
            };
            outcome = match transport.send(message.clone()).await {
                Ok(response) => {
                    return SmtpResult::Accepted(format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ));
                }
                Err(e) if e.is_permanent() => return SmtpResult::Permanent(e.to_string()),
                // The server answered: another address of it would answer the same.
                Err(e) if e.is_response() || e.is_transient() => {
                    return SmtpResult::Transient(e.to_string());
                }
                Err(e) => SmtpResult::Transient(format!("{ip}: {e}")),
            };
        }
        outcome
    }
}
