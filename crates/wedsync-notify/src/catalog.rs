//! Declarative catalog of notification HTTP providers.
//!
//! Providers are data: each one is a TOML file (see `catalog/`) that describes
//! the HTTP request to send for one message (method, URL, auth, headers and a
//! body template) and how to read the provider's answer. [`ProviderSpec::render`]
//! turns a spec plus a message context into an exact [`HttpRequest`]; the caller
//! sends it with its own HTTP client and hands the answer to
//! [`ProviderSpec::classify`]. There is no networking here.
//!
//! # Catalog format
//!
//! ```toml
//! kind = "resend"                 # unique name
//! channel = "email"               # email|sms|slack|teams|discord|pagerduty|webhook
//! description = "..."
//! require_one_of = [["config.from", "config.messaging_service_sid"]]   # optional
//!
//! [[config]]                      # non-secret settings; also [[secrets]]
//! name = "base_url"
//! required = false
//! format = "url"                  # "text" (default) or "url" (http(s) URL)
//! description = "..."
//!
//! [request]
//! method = "POST"
//! url = "{{ (config.base_url or 'https://api.resend.com') | trim('/') }}/emails"
//! encoding = "json"               # json | form | multipart
//! auth = { scheme = "bearer", token = "{{ secrets.api_key }}" }
//! idempotency_header = "Idempotency-Key"   # carries message.idempotency_key
//! [request.headers]
//! User-Agent = "wedsync/{{ version }}"
//! [request.body]                  # a JSON-value template
//! subject = "{{ message.subject }}"
//!
//! [response]
//! id = "/id"                      # JSON pointer to the provider's id in a 2xx body
//! error = "/message"              # JSON pointer to a human message in an error body
//! retry_after_body = "/retry_after"   # JSON pointer to seconds in a transient body
//! transient_statuses = [409]      # treated as transient besides 408, 425, 429, 5xx
//! ```
//!
//! Auth schemes: `{ scheme = "none" }` (default), `{ scheme = "bearer", token }`,
//! `{ scheme = "basic", username, password }` and `{ scheme = "header", name, value }`;
//! all values are templates and must not render empty.
//!
//! # Templates
//!
//! Strings are [MiniJinja](https://docs.rs/minijinja) templates evaluated against the
//! message context (`version`, `message`, `alert`, `config`, `secrets`). Undefined
//! values are chainable (`alert.couple` is simply undefined when there is no alert),
//! nothing is HTML-escaped, and every evaluation is bounded by [`FUEL`]. Values from
//! the context are never themselves evaluated as templates.
//!
//! In a JSON-value template (`[request.body]`):
//! * objects and arrays recurse;
//! * a string that is exactly one `{{ expr }}` is replaced by the expression's value
//!   with its JSON type; when that value is undefined or none the key is omitted from
//!   its object (or the element dropped from its array);
//! * any other string is rendered as a template string;
//! * the string `"$null"` is a JSON `null` (TOML has none);
//! * the key `"$merge"` (one `{{ expr }}` or an array of them) merges the objects the
//!   expressions yield into the enclosing object, at that position;
//! * the key `"$if"` (one `{{ expr }}`) drops the enclosing object unless the value is
//!   truthy.
//!
//! For `form` and `multipart` encodings the body must render to a flat object whose
//! values are strings or arrays of strings (an array becomes repeated fields).
//!
//! Filters registered besides MiniJinja's builtins:
//! * `required(name)`: fails the render with "`name` is required" when the value is
//!   undefined, none or blank; otherwise passes it through.
//! * `clip(n)`: at most `n` characters, ending with `…` when cut.
//! * `name_value`: a map to a list of `{name, value}` objects (Resend tags).
//! * `prefix_keys(prefix)`: a map with every key prefixed (Mailgun `h:` and `v:`).
//! * `mailbox`: `{name, email}` (or a list of them) to `Name <email>`, quoting the name
//!   when RFC 5322 needs it; a string is passed through.
//! * `slack_escape`: escapes `&`, `<` and `>` for Slack mrkdwn.
//!
//! All of them pass undefined and none through as undefined (except `required`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Instructions one template or expression evaluation may execute.
pub const FUEL: u64 = 50_000;

/// The builtin provider files, by file name.
const BUILTIN: &[(&str, &str)] = &[
    ("resend.toml", include_str!("../catalog/resend.toml")),
    ("mailgun.toml", include_str!("../catalog/mailgun.toml")),
    ("twilio.toml", include_str!("../catalog/twilio.toml")),
    ("slack.toml", include_str!("../catalog/slack.toml")),
    ("teams.toml", include_str!("../catalog/teams.toml")),
    ("discord.toml", include_str!("../catalog/discord.toml")),
    ("pagerduty.toml", include_str!("../catalog/pagerduty.toml")),
    ("webhook.toml", include_str!("../catalog/webhook.toml")),
];

/// Top-level names a template may refer to.
const CONTEXT_ROOTS: &[&str] = &["version", "message", "alert", "config", "secrets"];

/// How long an error excerpt taken from a response body may be, in characters.
const BODY_EXCERPT_CHARS: usize = 200;

/// Stands in for secret values in error and debug output.
const REDACTED: &str = "[redacted]";

// ---------------------------------------------------------------------------
// Catalog

/// The provider specs, by kind.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: BTreeMap<String, ProviderSpec>,
}

impl Catalog {
    /// Parses and checks the provider files built into this crate.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Self::from_sources(BUILTIN.iter().copied())
    }

    /// Parses and checks provider files given as `(source name, TOML text)`.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut providers = BTreeMap::new();
        for (name, text) in sources {
            let spec = ProviderSpec::from_toml(name, text)?;
            if providers.contains_key(&spec.kind) {
                return Err(CatalogError::Duplicate(spec.kind));
            }
            providers.insert(spec.kind.clone(), spec);
        }
        Ok(Catalog { providers })
    }

    /// The spec of one provider kind.
    pub fn get(&self, kind: &str) -> Option<&ProviderSpec> {
        self.providers.get(kind)
    }

    /// The provider kinds, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// The provider specs, in kind order.
    pub fn iter(&self) -> impl Iterator<Item = &ProviderSpec> {
        self.providers.values()
    }
}

/// Why a catalog could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The file is not valid TOML or does not have the catalog's shape.
    #[error("{source_name}: {message}")]
    Parse {
        /// File (or source) name.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// The spec parsed but is inconsistent (bad template, undeclared field, ...).
    #[error("{kind}: {field}: {message}")]
    Invalid {
        /// Provider kind.
        kind: String,
        /// Where in the spec, e.g. `request.body.to[0]`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two files declare the same kind.
    #[error("duplicate provider kind {0:?}")]
    Duplicate(String),
}

// ---------------------------------------------------------------------------
// Spec types

/// The kind of destination a provider delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Email.
    Email,
    /// SMS.
    Sms,
    /// Slack.
    Slack,
    /// Microsoft Teams.
    Teams,
    /// Discord.
    Discord,
    /// PagerDuty.
    #[serde(rename = "pagerduty")]
    PagerDuty,
    /// A generic webhook.
    Webhook,
}

impl Channel {
    /// The catalog spelling (`email`, `pagerduty`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
            Channel::Discord => "discord",
            Channel::PagerDuty => "pagerduty",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One provider, as described by its catalog file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Unique name, e.g. `mailgun`.
    pub kind: String,
    /// The kind of destination.
    pub channel: Channel,
    /// One line for people choosing a provider.
    pub description: String,
    /// Non-secret settings (`config.*` in templates).
    #[serde(default, rename = "config")]
    pub config_fields: Vec<FieldSpec>,
    /// Secret settings (`secrets.*` in templates).
    #[serde(default, rename = "secrets")]
    pub secret_fields: Vec<FieldSpec>,
    /// Groups of fields (`config.x` / `secrets.x`) of which at least one must be set.
    #[serde(default)]
    pub require_one_of: Vec<Vec<String>>,
    /// How to build the request.
    pub request: RequestSpec,
    /// How to read the answer.
    #[serde(default)]
    pub response: ResponseSpec,
}

/// One setting of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Key in `config` or `secrets`.
    pub name: String,
    /// Whether it must be present and non-blank.
    #[serde(default)]
    pub required: bool,
    /// What it is, for people filling it in.
    #[serde(default)]
    pub description: String,
    /// What a value must look like.
    #[serde(default)]
    pub format: FieldFormat,
}

/// What a setting's value must look like. Every value is a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldFormat {
    /// Any string.
    #[default]
    Text,
    /// An absolute `http://` or `https://` URL.
    Url,
}

/// How to build the HTTP request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// URL template.
    pub url: String,
    /// How the body is encoded.
    pub encoding: Encoding,
    /// How the request authenticates.
    #[serde(default)]
    pub auth: Auth,
    /// Header that carries `message.idempotency_key`, when the provider honours one.
    #[serde(default)]
    pub idempotency_header: Option<String>,
    /// Extra headers: name and value template, in file order.
    #[serde(default, deserialize_with = "ordered_pairs")]
    pub headers: Vec<(String, String)>,
    /// JSON-value template of the body.
    #[serde(default = "empty_object")]
    pub body: Value,
}

/// Body encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data`.
    Multipart,
}

/// How a request authenticates; every value is a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    /// No authentication header (the credential is in the URL or body).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Token template.
        token: String,
    },
    /// `Authorization: Basic base64(<username>:<password>)`.
    Basic {
        /// Username template.
        username: String,
        /// Password template.
        password: String,
    },
    /// `<name>: <value>`.
    Header {
        /// Header name.
        name: String,
        /// Value template.
        value: String,
    },
}

/// How to read the provider's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// JSON pointer to the provider's message id in a 2xx body.
    #[serde(default)]
    pub id: Option<String>,
    /// JSON pointer to a human-readable message in an error body.
    #[serde(default)]
    pub error: Option<String>,
    /// JSON pointer to a retry delay in seconds in a transient error body.
    #[serde(default)]
    pub retry_after_body: Option<String>,
    /// Statuses treated as transient besides 408, 425, 429 and 500–599.
    #[serde(default)]
    pub transient_statuses: Vec<u16>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Reads a TOML table of strings keeping its order.
fn ordered_pairs<'de, D>(deserializer: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct PairsVisitor;
    impl<'de> serde::de::Visitor<'de> for PairsVisitor {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry::<String, String>()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    deserializer.deserialize_map(PairsVisitor)
}

// ---------------------------------------------------------------------------
// Requests and replies

/// One HTTP request to send. `Content-Type` is not among the headers: take it from
/// [`Body::content_type`] (multipart needs the client's own boundary).
///
/// Its `Debug` output hides secret values and the authentication header; the fields
/// themselves hold them in clear, as they must be sent.
#[derive(Clone, PartialEq)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers in sending order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// Strings to hide from `Debug` output.
    redact: Vec<String>,
}

impl HttpRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = format!(
            "HttpRequest {{ method: {:?}, url: {:?}, headers: {:?}, body: {:?} }}",
            self.method, self.url, self.headers, self.body
        );
        f.write_str(&redact(raw, &self.redact))
    }
}

/// A request body. Its own `Debug` output is not redacted.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A JSON document.
    Json(Value),
    /// URL-encoded form fields, in order; a name may repeat.
    Form(Vec<(String, String)>),
    /// `multipart/form-data` text fields, in order; a name may repeat.
    Multipart(Vec<(String, String)>),
}

impl Body {
    /// The `Content-Type` to send, or `None` for multipart, whose boundary the HTTP
    /// client chooses.
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            Body::Json(_) => Some("application/json"),
            Body::Form(_) => Some("application/x-www-form-urlencoded"),
            Body::Multipart(_) => None,
        }
    }
}

/// What the provider's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The provider took the message (2xx).
    Accepted {
        /// The provider's id for it, when the answer has one.
        provider_id: Option<String>,
    },
    /// Worth trying again or trying the next provider: 408, 425, 429, 5xx.
    Transient {
        /// `HTTP <status>: <provider's message>`.
        reason: String,
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The provider refused this message (other 4xx): retrying will not help.
    Permanent {
        /// `HTTP <status>: <provider's message>`.
        reason: String,
    },
}

/// Why a request could not be rendered. Never contains secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template failed to compile or evaluate (including running out of fuel and
    /// the `required` filter).
    #[error("{provider}: {field}: {message}")]
    Template {
        /// Provider kind.
        provider: String,
        /// Which template, e.g. `request.body.to[0]`.
        field: String,
        /// MiniJinja's error text.
        message: String,
    },
    /// The rendered result cannot be sent (not a URL, bad header, wrong body shape,
    /// empty credential, ...).
    #[error("{provider}: {field}: {message}")]
    Invalid {
        /// Provider kind.
        provider: String,
        /// Which part, e.g. `request.auth.password`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl RenderError {
    /// The part of the spec that failed.
    pub fn field(&self) -> &str {
        match self {
            RenderError::Template { field, .. } | RenderError::Invalid { field, .. } => field,
        }
    }
}

// ---------------------------------------------------------------------------
// ProviderSpec: loading

impl ProviderSpec {
    /// Parses and checks one provider file; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str) -> Result<ProviderSpec, CatalogError> {
        let spec: ProviderSpec = toml::from_str(text).map_err(|e| CatalogError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks what the types cannot: names, templates and the fields they use.
    pub fn check(&self) -> Result<(), CatalogError> {
        let invalid = |field: &str, message: String| CatalogError::Invalid {
            kind: self.kind.clone(),
            field: field.to_owned(),
            message,
        };
        if self.kind.is_empty()
            || !self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "kind",
                "must be lowercase letters, digits, _ or -".into(),
            ));
        }
        if self.request.method.is_empty()
            || !self.request.method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(invalid(
                "request.method",
                "must be an uppercase HTTP method".into(),
            ));
        }
        for (section, fields) in [
            ("config", &self.config_fields),
            ("secrets", &self.secret_fields),
        ] {
            let mut seen = BTreeSet::new();
            for field in fields {
                let valid = !field.name.is_empty()
                    && field
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid || !seen.insert(field.name.as_str()) {
                    return Err(invalid(
                        &format!("{section}.{}", field.name),
                        "field names must be unique and made of letters, digits or _".into(),
                    ));
                }
            }
        }
        for group in &self.require_one_of {
            if group.is_empty() {
                return Err(invalid(
                    "require_one_of",
                    "a group must name at least one field".into(),
                ));
            }
            for path in group {
                if self.field(path).is_none() {
                    return Err(invalid(
                        "require_one_of",
                        format!("{path} is not a declared field"),
                    ));
                }
            }
        }
        for (name, pointer) in [
            ("response.id", &self.response.id),
            ("response.error", &self.response.error),
            ("response.retry_after_body", &self.response.retry_after_body),
        ] {
            if let Some(p) = pointer
                && !p.starts_with('/')
            {
                return Err(invalid(
                    name,
                    "must be a JSON pointer starting with /".into(),
                ));
            }
        }

        // Every template compiles and only uses the context and declared fields.
        let mut templates: Vec<(String, &str, bool)> =
            vec![("request.url".into(), &self.request.url, false)];
        match &self.request.auth {
            Auth::None => {}
            Auth::Bearer { token } => templates.push(("request.auth.token".into(), token, false)),
            Auth::Basic { username, password } => {
                templates.push(("request.auth.username".into(), username, false));
                templates.push(("request.auth.password".into(), password, false));
            }
            Auth::Header { name, value } => {
                if !is_header_name(name) {
                    return Err(invalid(
                        "request.auth.name",
                        "not a valid header name".into(),
                    ));
                }
                templates.push(("request.auth.value".into(), value, false));
            }
        }
        if let Some(name) = &self.request.idempotency_header
            && !is_header_name(name)
        {
            return Err(invalid(
                "request.idempotency_header",
                "not a valid header name".into(),
            ));
        }
        for (name, value) in &self.request.headers {
            if !is_header_name(name) {
                return Err(invalid(
                    &format!("request.headers.{name}"),
                    "not a valid header name".into(),
                ));
            }
            templates.push((format!("request.headers.{name}"), value, false));
        }
        collect_body_templates("request.body", &self.request.body, &mut templates)
            .map_err(|(field, message)| invalid(&field, message))?;
        if self.request.encoding != Encoding::Json && !self.request.body.is_object() {
            return Err(invalid(
                "request.body",
                "form and multipart bodies must be tables".into(),
            ));
        }

        let env = &*ENV;
        for (field, source, is_expression) in templates {
            let used = if is_expression {
                env.compile_expression(source)
                    .map(|e| e.undeclared_variables(true))
            } else {
                env.template_from_str(source)
                    .map(|t| t.undeclared_variables(true))
            }
            .map_err(|e| invalid(&field, describe(&e)))?;
            for var in used {
                let mut parts = var.split('.');
                let root = parts.next().unwrap_or_default();
                if !CONTEXT_ROOTS.contains(&root) {
                    return Err(invalid(&field, format!("unknown variable {root:?}")));
                }
                if let ("config" | "secrets", Some(name)) = (root, parts.next())
                    && self.field(&format!("{root}.{name}")).is_none()
                {
                    return Err(invalid(
                        &field,
                        format!("{root}.{name} is not a declared field"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The declared field for `config.<name>` or `secrets.<name>`.
    fn field(&self, path: &str) -> Option<&FieldSpec> {
        let (section, name) = path.split_once('.')?;
        let fields = match section {
            "config" => &self.config_fields,
            "secrets" => &self.secret_fields,
            _ => return None,
        };
        fields.iter().find(|f| f.name == name)
    }
}

/// Collects `(field, source, is_expression)` for every template in a body template.
fn collect_body_templates<'a>(
    path: &str,
    value: &'a Value,
    out: &mut Vec<(String, &'a str, bool)>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(s) if s == NULL_LEAF => {}
        Value::String(s) => match single_expression(s) {
            Some(expr) => out.push((path.to_owned(), expr, true)),
            None => out.push((path.to_owned(), s, false)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_body_templates(&format!("{path}[{i}]"), item, out)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let here = format!("{path}.{key}");
                match key.as_str() {
                    IF_KEY => {
                        let expr = item.as_str().and_then(single_expression).ok_or_else(|| {
                            (here.clone(), "must be one {{ expression }}".to_owned())
                        })?;
                        out.push((here, expr, true));
                    }
                    MERGE_KEY => {
                        for (i, expr) in merge_expressions(item).into_iter().enumerate() {
                            let expr = expr.ok_or_else(|| {
                                (
                                    here.clone(),
                                    "must be one {{ expression }} or an array of them".to_owned(),
                                )
                            })?;
                            out.push((format!("{here}[{i}]"), expr, true));
                        }
                    }
                    _ => collect_body_templates(&here, item, out)?,
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// The expressions of a `$merge` value (`None` for an entry that is not one).
fn merge_expressions(value: &Value) -> Vec<Option<&str>> {
    match value {
        Value::String(s) => vec![single_expression(s)],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().and_then(single_expression))
            .collect(),
        _ => vec![None],
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// ---------------------------------------------------------------------------
// ProviderSpec: settings

impl ProviderSpec {
    /// Checks an organisation's provider configuration when it is saved: required
    /// config/secret fields present (not blank), values are strings of the declared
    /// format, no unknown fields, and each `require_one_of` group satisfied. Errors are
    /// `(field, problem)`, e.g. `("config.domain", "required")`; they never quote values.
    pub fn validate_settings(
        &self,
        config: &Map<String, Value>,
        secrets: &Map<String, Value>,
    ) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        for (section, fields, values) in [
            ("config", &self.config_fields, config),
            ("secrets", &self.secret_fields, secrets),
        ] {
            for field in fields {
                let path = format!("{section}.{}", field.name);
                match values.get(&field.name) {
                    None | Some(Value::Null) => {
                        if field.required {
                            errors.push((path, "required".to_owned()));
                        }
                    }
                    Some(Value::String(s)) if s.trim().is_empty() => {
                        if field.required {
                            errors.push((path, "required".to_owned()));
                        }
                    }
                    Some(Value::String(s)) => {
                        if field.format == FieldFormat::Url && !is_http_url(s) {
                            errors.push((path, "must be an http(s) URL".to_owned()));
                        }
                    }
                    Some(_) => errors.push((path, "must be a string".to_owned())),
                }
            }
            for key in values.keys() {
                if !fields.iter().any(|f| &f.name == key) {
                    errors.push((format!("{section}.{key}"), "unknown field".to_owned()));
                }
            }
        }
        for group in &self.require_one_of {
            let set = group.iter().any(|path| {
                let (section, name) = path.split_once('.').unwrap_or_default();
                let values = if section == "secrets" {
                    secrets
                } else {
                    config
                };
                values
                    .get(name)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty())
            });
            if !set && let Some(first) = group.first() {
                errors.push((
                    first.clone(),
                    format!("one of {} is required", group.join(", ")),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

// ---------------------------------------------------------------------------
// ProviderSpec: rendering

const IF_KEY: &str = "$if";
const MERGE_KEY: &str = "$merge";
const NULL_LEAF: &str = "$null";

impl ProviderSpec {
    /// Renders the request for one message context (see the crate docs for its
    /// shape). Blank `config`/`secrets` entries count as unset.
    ///
    /// Headers are, in order: the auth header, `[request.headers]` (those rendering
    /// empty are left out), then the idempotency header when the message has a key.
    pub fn render(&self, ctx: &Value) -> Result<HttpRequest, RenderError> {
        let ctx = normalise_context(ctx).ok_or_else(|| RenderError::Invalid {
            provider: self.kind.clone(),
            field: "context".into(),
            message: "must be a JSON object".into(),
        })?;
        let mut secrets = Vec::new();
        if let Some(s) = ctx.get("secrets") {
            collect_strings(s, &mut secrets);
        }
        let r = Renderer {
            spec: self,
            ctx: minijinja::Value::from(Serde(&*ctx)),
            secrets,
        };
        let req = &self.request;

        let url = r.string("request.url", &req.url)?;
        if !is_http_url(&url) {
            return Err(r.invalid("request.url", "must render to an absolute http(s) URL"));
        }

        let mut headers = Vec::new();
        let mut redact_values = r.secrets.clone();
        match &req.auth {
            Auth::None => {}
            Auth::Bearer { token } => {
                let token = r.credential("request.auth.token", token)?;
                headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
            }
            Auth::Basic { username, password } => {
                let user = r.credential("request.auth.username", username)?;
                if user.contains(':') {
                    return Err(r.invalid("request.auth.username", "must not contain ':'"));
                }
                let password = r.credential("request.auth.password", password)?;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                redact_values.push(encoded.clone());
                headers.push(("Authorization".to_owned(), format!("Basic {encoded}")));
            }
            Auth::Header { name, value } => {
                let value = r.credential("request.auth.value", value)?;
                redact_values.push(value.clone());
                headers.push((name.clone(), value));
            }
        }
        for (name, template) in &req.headers {
            let field = format!("request.headers.{name}");
            let value = r.string(&field, template)?;
            if !value.is_empty() {
                r.check_header_value(&field, &value)?;
                headers.push((name.clone(), value));
            }
        }
        if let Some(name) = &req.idempotency_header
            && let Some(key) = ctx
                .pointer("/message/idempotency_key")
                .and_then(Value::as_str)
            && !key.is_empty()
        {
            r.check_header_value("message.idempotency_key", key)?;
            headers.push((name.clone(), key.to_owned()));
        }

        let body = r
            .value("request.body", &req.body)?
            .unwrap_or_else(empty_object);
        let body = match req.encoding {
            Encoding::Json => Body::Json(body),
            Encoding::Form => Body::Form(r.fields(body, "form")?),
            Encoding::Multipart => Body::Multipart(r.fields(body, "multipart")?),
        };

        redact_values.retain(|s| !s.is_empty());
        redact_values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        redact_values.dedup();
        Ok(HttpRequest {
            method: req.method.clone(),
            url,
            headers,
            body,
            redact: redact_values,
        })
    }
}

/// Drops blank `config`/`secrets` entries; `None` when the context is not an object.
fn normalise_context(ctx: &Value) -> Option<Cow<'_, Value>> {
    let obj = ctx.as_object()?;
    let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
    let needs_change = ["config", "secrets"].iter().any(|k| {
        obj.get(*k)
            .and_then(Value::as_object)
            .is_some_and(|m| m.values().any(blank))
    });
    if !needs_change {
        return Some(Cow::Borrowed(ctx));
    }
    let mut owned = obj.clone();
    for key in ["config", "secrets"] {
        if let Some(Value::Object(m)) = owned.get_mut(key) {
            m.retain(|_, v| !blank(v));
        }
    }
    Some(Cow::Owned(Value::Object(owned)))
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Replaces every secret (as is and as `Debug` escapes it) with [`REDACTED`].
/// `secrets` is sorted longest first.
fn redact(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if secret.is_empty() {
            continue;
        }
        text = text.replace(secret.as_str(), REDACTED);
        let escaped = format!("{secret:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped != secret {
            text = text.replace(escaped, REDACTED);
        }
    }
    text
}

/// An error message from MiniJinja, without file names or values.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line().filter(|&l| l > 1) {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

/// A string that is exactly one `{{ expr }}` (ignoring surrounding whitespace),
/// giving `expr`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|m| inner.contains(m))
    {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner).trim();
    (!inner.is_empty()).then_some(inner)
}

struct Renderer<'a> {
    spec: &'a ProviderSpec,
    ctx: minijinja::Value,
    /// Secret strings of the context, hidden from error messages.
    secrets: Vec<String>,
}

impl Renderer<'_> {
    fn template_error(&self, field: &str, err: &minijinja::Error) -> RenderError {
        RenderError::Template {
            provider: self.spec.kind.clone(),
            field: field.to_owned(),
            message: redact(describe(err), &self.secrets),
        }
    }

    fn invalid(&self, field: &str, message: impl Into<String>) -> RenderError {
        RenderError::Invalid {
            provider: self.spec.kind.clone(),
            field: field.to_owned(),
            message: redact(message.into(), &self.secrets),
        }
    }

    /// Renders a template string.
    fn string(&self, field: &str, source: &str) -> Result<String, RenderError> {
        ENV.render_str(source, self.ctx.clone())
            .map_err(|e| self.template_error(field, &e))
    }

    /// Renders a credential, which must not be empty.
    fn credential(&self, field: &str, source: &str) -> Result<String, RenderError> {
        let value = self.string(field, source)?;
        if value.trim().is_empty() {
            return Err(self.invalid(field, "rendered empty (is the secret or setting missing?)"));
        }
        self.check_header_value(field, &value)?;
        Ok(value)
    }

    fn check_header_value(&self, field: &str, value: &str) -> Result<(), RenderError> {
        if value
            .chars()
            .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
        {
            return Err(self.invalid(
                field,
                "contains a control character (CR/LF?) and cannot be a header value",
            ));
        }
        Ok(())
    }

    fn eval(&self, field: &str, expr: &str) -> Result<minijinja::Value, RenderError> {
        let compiled = ENV
            .compile_expression(expr)
            .map_err(|e| self.template_error(field, &e))?;
        compiled
            .eval(self.ctx.clone())
            .map_err(|e| self.template_error(field, &e))
    }

    fn to_json(&self, field: &str, value: &minijinja::Value) -> Result<Value, RenderError> {
        serde_json::to_value(value)
            .map_err(|e| self.invalid(field, format!("not representable as JSON: {e}")))
    }

    /// Renders a JSON-value template; `None` means "leave this out".
    fn value(&self, path: &str, template: &Value) -> Result<Option<Value>, RenderError> {
        match template {
            Value::String(s) if s == NULL_LEAF => Ok(Some(Value::Null)),
            Value::String(s) => match single_expression(s) {
                Some(expr) => {
                    let v = self.eval(path, expr)?;
                    if v.is_undefined() || v.is_none() {
                        Ok(None)
                    } else {
                        self.to_json(path, &v).map(Some)
                    }
                }
                None => self.string(path, s).map(|s| Some(Value::String(s))),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = self.value(&format!("{path}[{i}]"), item)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(map) => {
                if let Some(condition) = map.get(IF_KEY) {
                    let field = format!("{path}.{IF_KEY}");
                    let expr = condition
                        .as_str()
                        .and_then(single_expression)
                        .ok_or_else(|| self.invalid(&field, "must be one {{ expression }}"))?;
                    if !self.eval(&field, expr)?.is_true() {
                        return Ok(None);
                    }
                }
                let mut out = Map::new();
                for (key, item) in map {
                    match key.as_str() {
                        IF_KEY => {}
                        MERGE_KEY => self.merge(&format!("{path}.{MERGE_KEY}"), item, &mut out)?,
                        _ => {
                            if let Some(v) = self.value(&format!("{path}.{key}"), item)? {
                                out.insert(key.clone(), v);
                            }
                        }
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    fn merge(
        &self,
        path: &str,
        item: &Value,
        out: &mut Map<String, Value>,
    ) -> Result<(), RenderError> {
        for (i, expr) in merge_expressions(item).into_iter().enumerate() {
            let field = format!("{path}[{i}]");
            let expr = expr.ok_or_else(|| {
                self.invalid(&field, "must be one {{ expression }} or an array of them")
            })?;
            let v = self.eval(&field, expr)?;
            if v.is_undefined() || v.is_none() {
                continue;
            }
            match self.to_json(&field, &v)? {
                Value::Object(map) => {
                    for (k, v) in map {
                        if !v.is_null() {
                            out.insert(k, v);
                        }
                    }
                }
                _ => return Err(self.invalid(&field, "must yield an object")),
            }
        }
        Ok(())
    }

    /// Flattens a rendered body into form fields.
    fn fields(&self, body: Value, encoding: &str) -> Result<Vec<(String, String)>, RenderError> {
        let Value::Object(map) = body else {
            return Err(self.invalid(
                "request.body",
                format!("must render to an object for {encoding} encoding"),
            ));
        };
        let mut fields = Vec::with_capacity(map.len());
        for (key, value) in map {
            match value {
                Value::String(s) => fields.push((key, s)),
                Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        match item {
                            Value::String(s) => fields.push((key.clone(), s)),
                            other => {
                                return Err(self.invalid(
                                    &format!("request.body.{key}[{i}]"),
                                    format!(
                                        "must be a string for {encoding} encoding, not {}",
                                        json_type(&other)
                                    ),
                                ));
                            }
                        }
                    }
                }
                other => {
                    return Err(self.invalid(
                        &format!("request.body.{key}"),
                        format!(
                            "must be a string or an array of strings for {encoding} encoding, not {}",
                            json_type(&other)
                        ),
                    ));
                }
            }
        }
        Ok(fields)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// ProviderSpec: replies

impl ProviderSpec {
    /// Classifies the provider's answer: 2xx accepted (with the id at `response.id`),
    /// 408, 425, 429, 5xx and `response.transient_statuses` transient (honouring a
    /// `Retry-After` header in seconds and `response.retry_after_body`, the longer of
    /// the two), anything else permanent.
    pub fn classify(&self, status: u16, headers: &[(String, String)], body: &[u8]) -> Reply {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let at = |pointer: &Option<String>| -> Option<&Value> {
            json.as_ref()?.pointer(pointer.as_deref()?)
        };
        if (200..300).contains(&status) {
            let provider_id = at(&self.response.id).and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            return Reply::Accepted { provider_id };
        }
        let message = match at(&self.response.error) {
            Some(Value::String(s)) => clip(s.trim(), BODY_EXCERPT_CHARS),
            Some(v) if !v.is_null() => clip(&v.to_string(), BODY_EXCERPT_CHARS),
            _ => {
                let text = String::from_utf8_lossy(body);
                clip(
                    text.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .as_str(),
                    BODY_EXCERPT_CHARS,
                )
            }
        };
        let reason = if message.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {message}")
        };
        let transient = matches!(status, 408 | 425 | 429 | 500..=599)
            || self.response.transient_statuses.contains(&status);
        if !transient {
            return Reply::Permanent { reason };
        }
        let from_header = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| seconds(value.trim().parse::<f64>().ok()?));
        let from_body = at(&self.response.retry_after_body).and_then(|v| match v {
            Value::Number(n) => seconds(n.as_f64()?),
            Value::String(s) => seconds(s.trim().parse().ok()?),
            _ => None,
        });
        Reply::Transient {
            reason,
            retry_after: from_header.max(from_body),
        }
    }
}

/// A non-negative, finite number of seconds as a duration.
fn seconds(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    }
}

/// At most `max` characters, ending with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Template environment

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.add_filter("required", filter_required);
    env.add_filter("clip", filter_clip);
    env.add_filter("name_value", filter_name_value);
    env.add_filter("prefix_keys", filter_prefix_keys);
    env.add_filter("mailbox", filter_mailbox);
    env.add_filter("slack_escape", filter_slack_escape);
    env
});

type FilterResult = Result<minijinja::Value, minijinja::Error>;

fn absent(v: &minijinja::Value) -> bool {
    v.is_undefined() || v.is_none()
}

fn filter_error(message: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message)
}

/// `value | required('name')`.
fn filter_required(value: minijinja::Value, name: String) -> FilterResult {
    let blank = value.as_str().is_some_and(|s| s.trim().is_empty());
    if absent(&value) || blank {
        return Err(filter_error(format!("{name} is required")));
    }
    Ok(value)
}

/// `value | clip(n)`.
fn filter_clip(value: minijinja::Value, max: usize) -> FilterResult {
    if absent(&value) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    Ok(minijinja::Value::from(clip(&value.to_string(), max)))
}

/// The `(key, value)` entries of a map value, skipping absent values.
fn map_entries(
    value: &minijinja::Value,
    filter: &str,
) -> Result<Vec<(minijinja::Value, minijinja::Value)>, minijinja::Error> {
    if value.kind() != ValueKind::Map {
        return Err(filter_error(format!(
            "{filter} expects a map, not {}",
            value.kind()
        )));
    }
    let mut entries = Vec::new();
    for key in value.try_iter()? {
        let item = value.get_item(&key)?;
        if !absent(&item) {
            entries.push((key, item));
        }
    }
    Ok(entries)
}

/// `map | name_value`: `[{name, value}, ...]`.
fn filter_name_value(value: minijinja::Value) -> FilterResult {
    if absent(&value) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    let items: Vec<minijinja::Value> = map_entries(&value, "name_value")?
        .into_iter()
        .map(|(k, v)| {
            minijinja::Value::from_pairs([
                ("name", minijinja::Value::from(k.to_string())),
                ("value", minijinja::Value::from(v.to_string())),
            ])
        })
        .collect();
    Ok(minijinja::Value::from(items))
}

/// `map | prefix_keys('h:')`.
fn filter_prefix_keys(value: minijinja::Value, prefix: String) -> FilterResult {
    if absent(&value) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    let entries = map_entries(&value, "prefix_keys")?;
    Ok(minijinja::Value::from_pairs(
        entries
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v)),
    ))
}

/// `recipient | mailbox`.
fn filter_mailbox(value: minijinja::Value) -> FilterResult {
    if absent(&value) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    match value.kind() {
        ValueKind::String => Ok(value),
        ValueKind::Seq => {
            let mut out = Vec::new();
            for item in value.try_iter()? {
                let item = filter_mailbox(item)?;
                if !absent(&item) {
                    out.push(item);
                }
            }
            Ok(minijinja::Value::from(out))
        }
        ValueKind::Map => {
            let email = value.get_attr("email")?;
            let Some(email) = email.as_str().filter(|e| !e.trim().is_empty()) else {
                return Ok(minijinja::Value::UNDEFINED);
            };
            let name = value.get_attr("name")?;
            Ok(minijinja::Value::from(format_mailbox(name.as_str(), email)))
        }
        other => Err(filter_error(format!(
            "mailbox expects a map, list or string, not {other}"
        ))),
    }
}

/// `Name <email>`, quoting the name when it has characters outside RFC 5322 atoms.
fn format_mailbox(name: Option<&str>, email: &str) -> String {
    let email: String = email.chars().filter(|c| !c.is_control()).collect();
    let email = email.trim();
    let name: String = name
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.trim();
    if name.is_empty() {
        return email.to_owned();
    }
    let atom = |c: char| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if name.chars().all(atom) {
        format!("{name} <{email}>")
    } else {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{quoted}\" <{email}>")
    }
}

/// `text | slack_escape`.
fn filter_slack_escape(value: minijinja::Value) -> FilterResult {
    if absent(&value) {
        return Ok(minijinja::Value::UNDEFINED);
    }
    let text = value.to_string();
    Ok(minijinja::Value::from(
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    ))
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    /// Form and multipart fields in name order (repeated names keep their order): field
    /// order carries no meaning in either encoding, and JSON maps here are ordered by name.
    fn sorted(body: Body) -> Body {
        match body {
            Body::Form(mut f) => {
                f.sort_by(|a, b| a.0.cmp(&b.0));
                Body::Form(f)
            }
            Body::Multipart(mut f) => {
                f.sort_by(|a, b| a.0.cmp(&b.0));
                Body::Multipart(f)
            }
            other => other,
        }
    }

    use super::*;
    use serde_json::json;

    const RESEND_KEY: &str = "re_123456789_SecretToken";
    const MAILGUN_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    /// base64("api:" + MAILGUN_KEY), computed outside this crate.
    const MAILGUN_BASIC: &str = "Basic YXBpOmtleS0zYXg2eG5qcDI5amQ2ZmRzNGdjMzczc2d2anh0ZW9sMA==";
    const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TWILIO_TOKEN: &str = "tw_auth_token_secret_42";
    /// base64(TWILIO_SID + ":" + TWILIO_TOKEN), computed outside this crate.
    const TWILIO_BASIC: &str =
        "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0d19hdXRoX3Rva2VuX3NlY3JldF80Mg==";
    const SLACK_URL: &str = "https://hooks.slack.com/services/T000/B000/slack-secret-token";
    const TEAMS_URL: &str = "https://prod-01.uksouth.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=teams-secret-sig";
    const DISCORD_URL: &str = "https://discord.com/api/webhooks/123456/discord-secret-token";
    const PD_KEY: &str = "R0UT1NGKEY0123456789abcdefabcdef";
    const HOOK_URL: &str = "https://hooks.studio.example/wedsync?token=hook-secret-token";

    fn catalog() -> Catalog {
        Catalog::builtin().expect("builtin catalog loads")
    }

    fn spec(kind: &str) -> ProviderSpec {
        catalog().get(kind).expect("provider in catalog").clone()
    }

    /// A full context: an email-style message that is also an alert.
    fn context(config: Value, secrets: Value) -> Value {
        json!({
            "version": "0.1.0",
            "message": {
                "id": "ntf_01J9ZK3M4N",
                "idempotency_key": "ntf_01J9ZK3M4N-1",
                "channel": "email",
                "to": {"name": "Alex Smith", "email": "alex@example.com", "phone": "+447700900123"},
                "from": "Studio <hello@studio.example>",
                "reply_to": "hello@studio.example",
                "subject": "Your balance is due",
                "text": "Hi Alex, the balance for 12 June is due.",
                "html": "<p>Hi Alex, the balance for 12 June is due.</p>",
                "headers": {
                    "List-Unsubscribe": "<https://hub.example/u/abc>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"
                },
                "tags": {"notification_id": "ntf_01J9ZK3M4N", "org_id": "org_42"},
                "title": "Payment failed",
                "severity": "critical",
                "action": "trigger",
                "dedup_key": "payment-failed/ntf_01J9ZK3M4N",
                "link": "https://app.wedsync.example/n/ntf_01J9ZK3M4N",
                "status_callback": "https://hub.example/v1/inbound/src_77"
            },
            "alert": {
                "notification_id": "ntf_01J9ZK3M4N",
                "summary": "Payment failed for Alex & Sam",
                "couple": "Alex & Sam",
                "wedding_date": "Saturday 12 June 2027",
                "venue": "Kew Gardens, London",
                "weddings_today": 23,
                "severity": "critical",
                "escalation": "maximum",
                "org_name": "Lens & Light"
            },
            "config": config,
            "secrets": secrets
        })
    }

    /// Removes the values at these JSON pointers.
    fn without(mut ctx: Value, pointers: &[&str]) -> Value {
        for pointer in pointers {
            let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
            ctx.pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .expect("parent is an object")
                .remove(key);
        }
        ctx
    }

    /// Sets the value at a JSON pointer whose parent exists.
    fn with(mut ctx: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
        ctx.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent is an object")
            .insert(key.to_owned(), value);
        ctx
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn render(kind: &str, ctx: &Value) -> HttpRequest {
        spec(kind).render(ctx).expect("renders")
    }

    fn json_body(req: &HttpRequest) -> &Value {
        match &req.body {
            Body::Json(v) => v,
            other => panic!("expected a JSON body, got {other:?}"),
        }
    }

    fn render_err(spec: &ProviderSpec, ctx: &Value) -> RenderError {
        match spec.render(ctx) {
            Ok(req) => panic!("expected a render error, got {req:?}"),
            Err(e) => e,
        }
    }

    fn resend_ctx() -> Value {
        context(
            json!({"from": "Default <noreply@studio.example>"}),
            json!({"api_key": RESEND_KEY}),
        )
    }

    fn slack_ctx() -> Value {
        context(json!({}), json!({"webhook_url": SLACK_URL}))
    }

    fn pd_ctx() -> Value {
        context(
            json!({"group": "studio-ops"}),
            json!({"routing_key": PD_KEY}),
        )
    }

    // -- catalog ------------------------------------------------------------

    #[test]
    fn builtin_catalog_loads_every_provider() {
        let catalog = catalog();
        let kinds: Vec<&str> = catalog.kinds().collect();
        assert_eq!(
            kinds,
            [
                "discord",
                "mailgun",
                "pagerduty",
                "resend",
                "slack",
                "teams",
                "twilio",
                "webhook"
            ]
        );
        let channel = |k: &str| catalog.get(k).expect("kind").channel;
        assert_eq!(channel("resend"), Channel::Email);
        assert_eq!(channel("mailgun"), Channel::Email);
        assert_eq!(channel("twilio"), Channel::Sms);
        assert_eq!(channel("slack"), Channel::Slack);
        assert_eq!(channel("teams"), Channel::Teams);
        assert_eq!(channel("discord"), Channel::Discord);
        assert_eq!(channel("pagerduty"), Channel::PagerDuty);
        assert_eq!(channel("webhook"), Channel::Webhook);
        assert!(catalog.get("carrier-pigeon").is_none());
        for spec in catalog.iter() {
            assert!(
                !spec.description.is_empty(),
                "{} has a description",
                spec.kind
            );
        }
    }

    #[test]
    fn api_providers_accept_a_base_url_override() {
        for kind in ["resend", "mailgun", "twilio", "pagerduty"] {
            let field = spec(kind)
                .field("config.base_url")
                .cloned()
                .expect("base_url declared");
            assert_eq!(field.format, FieldFormat::Url, "{kind}");
            assert!(!field.required, "{kind}");
        }
    }

    const MINIMAL: &str = r#"
        kind = "mini"
        channel = "webhook"
        description = "test"
        [[config]]
        name = "host"
        [request]
        method = "POST"
        url = "https://{{ config.host }}/x"
        encoding = "json"
    "#;

    #[test]
    fn catalog_rejects_inconsistent_specs() {
        assert!(ProviderSpec::from_toml("mini.toml", MINIMAL).is_ok());

        let undeclared = MINIMAL.replace("config.host", "config.hots");
        assert_eq!(
            ProviderSpec::from_toml("mini.toml", &undeclared),
            Err(CatalogError::Invalid {
                kind: "mini".into(),
                field: "request.url".into(),
                message: "config.hots is not a declared field".into(),
            })
        );

        let unknown_root = MINIMAL.replace("config.host", "settings.host");
        let err = ProviderSpec::from_toml("mini.toml", &unknown_root).expect_err("unknown root");
        assert!(
            err.to_string().contains("unknown variable \"settings\""),
            "{err}"
        );

        let malformed = MINIMAL.replace("{{ config.host }}", "{{ config.host ");
        let err = ProviderSpec::from_toml("mini.toml", &malformed).expect_err("malformed");
        assert!(
            matches!(&err, CatalogError::Invalid { field, .. } if field == "request.url"),
            "{err:?}"
        );

        let bad_if = format!("{MINIMAL}\n[request.body]\n\"$if\" = \"yes\"\n");
        let err = ProviderSpec::from_toml("mini.toml", &bad_if).expect_err("bad $if");
        assert!(
            matches!(&err, CatalogError::Invalid { field, .. } if field == "request.body.$if"),
            "{err:?}"
        );

        let unknown_key =
            MINIMAL.replace("encoding = \"json\"", "encoding = \"json\"\ntimeout = 3");
        let err = ProviderSpec::from_toml("mini.toml", &unknown_key).expect_err("unknown key");
        assert!(
            matches!(&err, CatalogError::Parse { source_name, message }
            if source_name == "mini.toml" && message.contains("timeout")),
            "{err:?}"
        );

        let bad_channel = MINIMAL.replace("\"webhook\"", "\"fax\"");
        assert!(matches!(
            ProviderSpec::from_toml("mini.toml", &bad_channel),
            Err(CatalogError::Parse { .. })
        ));

        let form_array = MINIMAL.replace("\"json\"", "\"form\"") + "[request]\n";
        assert!(ProviderSpec::from_toml("mini.toml", &form_array).is_err());

        let dup = Catalog::from_sources([("a.toml", MINIMAL), ("b.toml", MINIMAL)]);
        assert_eq!(dup.map(|_| ()), Err(CatalogError::Duplicate("mini".into())));
    }

    // -- resend -------------------------------------------------------------

    #[test]
    fn resend_request_is_exact() {
        let req = render("resend", &resend_ctx());
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "https://api.resend.com/emails");
        assert_eq!(
            req.headers,
            pairs(&[
                ("Authorization", "Bearer re_123456789_SecretToken"),
                ("User-Agent", "wedsync/0.1.0"),
                ("Idempotency-Key", "ntf_01J9ZK3M4N-1"),
            ])
        );
        assert_eq!(
            req.body,
            Body::Json(json!({
                "from": "Studio <hello@studio.example>",
                "to": ["alex@example.com"],
                "subject": "Your balance is due",
                "html": "<p>Hi Alex, the balance for 12 June is due.</p>",
                "text": "Hi Alex, the balance for 12 June is due.",
                "reply_to": "hello@studio.example",
                "headers": {
                    "List-Unsubscribe": "<https://hub.example/u/abc>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"
                },
                "tags": [
                    {"name": "notification_id", "value": "ntf_01J9ZK3M4N"},
                    {"name": "org_id", "value": "org_42"}
                ]
            }))
        );
        assert_eq!(req.body.content_type(), Some("application/json"));
    }

    #[test]
    fn resend_omits_absent_optionals_and_falls_back_to_config_from() {
        let ctx = without(
            resend_ctx(),
            &[
                "/message/html",
                "/message/reply_to",
                "/message/from",
                "/message/headers",
                "/message/tags",
                "/message/idempotency_key",
            ],
        );
        let ctx = with(ctx, "/config/base_url", json!("http://127.0.0.1:8025/"));
        let req = render("resend", &ctx);
        assert_eq!(req.url, "http://127.0.0.1:8025/emails");
        assert_eq!(
            req.headers,
            pairs(&[
                ("Authorization", "Bearer re_123456789_SecretToken"),
                ("User-Agent", "wedsync/0.1.0")
            ])
        );
        assert_eq!(
            json_body(&req),
            &json!({
                "from": "Default <noreply@studio.example>",
                "to": ["alex@example.com"],
                "subject": "Your balance is due",
                "text": "Hi Alex, the balance for 12 June is due."
            })
        );
    }

    #[test]
    fn resend_without_any_sender_names_the_missing_value() {
        let ctx = without(resend_ctx(), &["/message/from", "/config/from"]);
        let err = render_err(&spec("resend"), &ctx);
        assert_eq!(err.field(), "request.body.from");
        assert!(
            err.to_string()
                .contains("message.from or config.from is required"),
            "{err}"
        );
    }

    #[test]
    fn context_values_are_not_evaluated_as_templates() {
        let ctx = with(
            resend_ctx(),
            "/message/subject",
            json!("{{ secrets.api_key }}"),
        );
        let req = render("resend", &ctx);
        assert_eq!(json_body(&req)["subject"], json!("{{ secrets.api_key }}"));
    }

    // -- mailgun ------------------------------------------------------------

    #[test]
    fn mailgun_request_is_exact() {
        let ctx = context(
            json!({"domain": "mg.studio.example", "base_url": "https://api.eu.mailgun.net"}),
            json!({"api_key": MAILGUN_KEY}),
        );
        let req = render("mailgun", &ctx);
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.url,
            "https://api.eu.mailgun.net/v3/mg.studio.example/messages"
        );
        assert_eq!(
            req.headers,
            pairs(&[
                ("Authorization", MAILGUN_BASIC),
                ("User-Agent", "wedsync/0.1.0")
            ])
        );
        assert_eq!(
            sorted(req.body.clone()),
            sorted(Body::Multipart(pairs(&[
                ("from", "Studio <hello@studio.example>"),
                ("to", "Alex Smith <alex@example.com>"),
                ("subject", "Your balance is due"),
                ("text", "Hi Alex, the balance for 12 June is due."),
                ("html", "<p>Hi Alex, the balance for 12 June is due.</p>"),
                ("o:tag", "wedsync"),
                ("h:Reply-To", "hello@studio.example"),
                ("h:List-Unsubscribe", "<https://hub.example/u/abc>"),
                ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ("v:notification_id", "ntf_01J9ZK3M4N"),
                ("v:org_id", "org_42"),
            ])))
        );
        assert_eq!(req.body.content_type(), None);
    }

    #[test]
    fn mailgun_defaults_and_several_recipients() {
        let ctx = context(
            json!({"domain": "mg.studio.example", "tag": "balance"}),
            json!({"api_key": MAILGUN_KEY}),
        );
        let ctx = without(
            ctx,
            &["/message/html", "/message/reply_to", "/message/headers"],
        );
        let ctx = with(
            ctx,
            "/message/to",
            json!([
                {"name": "Smith, Alex", "email": "alex@example.com"},
                {"email": "sam@example.com"},
                {"name": "Sam \"Jo\" Lee", "email": "jo@example.com"}
            ]),
        );
        let req = render("mailgun", &ctx);
        assert_eq!(
            req.url,
            "https://api.mailgun.net/v3/mg.studio.example/messages"
        );
        assert_eq!(
            sorted(req.body.clone()),
            sorted(Body::Multipart(pairs(&[
                ("from", "Studio <hello@studio.example>"),
                ("to", "\"Smith, Alex\" <alex@example.com>"),
                ("to", "sam@example.com"),
                ("to", "\"Sam \\\"Jo\\\" Lee\" <jo@example.com>"),
                ("subject", "Your balance is due"),
                ("text", "Hi Alex, the balance for 12 June is due."),
                ("o:tag", "balance"),
                ("v:notification_id", "ntf_01J9ZK3M4N"),
                ("v:org_id", "org_42"),
            ])))
        );
    }

    // -- twilio -------------------------------------------------------------

    fn twilio_ctx(config: Value) -> Value {
        let ctx = context(config, json!({"auth_token": TWILIO_TOKEN}));
        with(ctx, "/message/channel", json!("sms"))
    }

    #[test]
    fn twilio_request_is_exact() {
        let ctx = twilio_ctx(
            json!({"account_sid": TWILIO_SID, "from": "+447700900999", "base_url": "http://127.0.0.1:4010"}),
        );
        let req = render("twilio", &ctx);
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.url,
            "http://127.0.0.1:4010/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        // No idempotency header: Twilio has none.
        assert_eq!(
            req.headers,
            pairs(&[
                ("Authorization", TWILIO_BASIC),
                ("User-Agent", "wedsync/0.1.0")
            ])
        );
        assert_eq!(
            sorted(req.body.clone()),
            sorted(Body::Form(pairs(&[
                ("To", "+447700900123"),
                ("From", "+447700900999"),
                ("Body", "Hi Alex, the balance for 12 June is due."),
                ("StatusCallback", "https://hub.example/v1/inbound/src_77"),
            ])))
        );
        assert_eq!(
            req.body.content_type(),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[test]
    fn twilio_messaging_service_replaces_from() {
        let ctx = twilio_ctx(json!({
            "account_sid": TWILIO_SID,
            "from": "+447700900999",
            "messaging_service_sid": "MG0123456789abcdef0123456789abcdef"
        }));
        let ctx = without(ctx, &["/message/status_callback"]);
        let req = render("twilio", &ctx);
        assert_eq!(
            req.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        assert_eq!(
            sorted(req.body.clone()),
            sorted(Body::Form(pairs(&[
                ("To", "+447700900123"),
                ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
                ("Body", "Hi Alex, the balance for 12 June is due."),
            ])))
        );
    }

    #[test]
    fn blank_settings_count_as_unset() {
        let ctx = twilio_ctx(
            json!({"account_sid": TWILIO_SID, "from": "+447700900999", "messaging_service_sid": "  "}),
        );
        let req = render("twilio", &ctx);
        let Body::Form(fields) = &req.body else {
            panic!("form body")
        };
        assert!(fields.contains(&("From".to_owned(), "+447700900999".to_owned())));
        assert!(!fields.iter().any(|(k, _)| k == "MessagingServiceSid"));
    }

    #[test]
    fn form_bodies_must_be_flat_strings() {
        let mut spec = spec("twilio");
        spec.request.body["Body"] = json!("{{ message.to }}");
        let ctx = twilio_ctx(json!({"account_sid": TWILIO_SID, "from": "+447700900999"}));
        let err = render_err(&spec, &ctx);
        assert_eq!(
            err,
            RenderError::Invalid {
                provider: "twilio".into(),
                field: "request.body.Body".into(),
                message: "must be a string or an array of strings for form encoding, not an object"
                    .into(),
            }
        );
        spec.request.body["Body"] = json!(["{{ message.text }}", "{{ alert.weddings_today }}"]);
        assert_eq!(render_err(&spec, &ctx).field(), "request.body.Body[1]");
    }

    // -- slack --------------------------------------------------------------

    #[test]
    fn slack_alert_request_is_exact() {
        let req = render("slack", &slack_ctx());
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, SLACK_URL);
        assert_eq!(req.headers, pairs(&[("User-Agent", "wedsync/0.1.0")]));
        assert_eq!(
            req.body,
            Body::Json(json!({
                "text": "Payment failed for Alex &amp; Sam",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Payment failed for Alex & Sam", "emoji": true}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Couple*\nAlex &amp; Sam"},
                        {"type": "mrkdwn", "text": "*Wedding date*\nSaturday 12 June 2027"},
                        {"type": "mrkdwn", "text": "*Venue*\nKew Gardens, London"}
                    ]},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "23 weddings today"}]},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "Hi Alex, the balance for 12 June is due."}},
                    {"type": "actions", "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "Acknowledge"},
                         "action_id": "acknowledge", "style": "primary", "value": "ntf_01J9ZK3M4N"},
                        {"type": "button", "text": {"type": "plain_text", "text": "Resolve"},
                         "action_id": "resolve", "style": "danger", "value": "ntf_01J9ZK3M4N"}
                    ]}
                ]
            }))
        );
    }

    #[test]
    fn slack_plain_message_has_no_alert_blocks() {
        let ctx = without(slack_ctx(), &["/alert"]);
        let ctx = with(ctx, "/message/text", json!("Gallery <ready> & shared"));
        let ctx = with(
            ctx,
            "/secrets/webhook_url",
            json!("http://127.0.0.1:9000/services/T/B/x"),
        );
        let req = render("slack", &ctx);
        assert_eq!(req.url, "http://127.0.0.1:9000/services/T/B/x");
        assert_eq!(
            json_body(&req),
            &json!({
                "text": "Payment failed",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Payment failed", "emoji": true}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "Gallery &lt;ready&gt; &amp; shared"}}
                ]
            })
        );
    }

    #[test]
    fn slack_shows_only_the_facts_present() {
        let ctx = without(slack_ctx(), &["/alert/couple", "/alert/venue"]);
        let ctx = with(ctx, "/alert/weddings_today", json!(1));
        let body = json_body(&render("slack", &ctx)).clone();
        assert_eq!(
            body["blocks"][1],
            json!({"type": "section", "fields": [{"type": "mrkdwn", "text": "*Wedding date*\nSaturday 12 June 2027"}]})
        );
        assert_eq!(
            body["blocks"][2]["elements"][0]["text"],
            json!("1 wedding today")
        );
    }

    // -- teams --------------------------------------------------------------

    #[test]
    fn teams_request_is_exact() {
        let ctx = context(json!({}), json!({"webhook_url": TEAMS_URL}));
        let req = render("teams", &ctx);
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, TEAMS_URL);
        assert_eq!(req.headers, pairs(&[("User-Agent", "wedsync/0.1.0")]));
        assert_eq!(
            req.body,
            Body::Json(json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {"type": "TextBlock", "text": "Payment failed for Alex & Sam", "weight": "bolder",
                             "size": "medium", "wrap": true, "color": "attention"},
                            {"type": "FactSet", "facts": [
                                {"title": "Couple", "value": "Alex & Sam"},
                                {"title": "Wedding date", "value": "Saturday 12 June 2027"},
                                {"title": "Venue", "value": "Kew Gardens, London"},
                                {"title": "Weddings today", "value": "23"}
                            ]},
                            {"type": "TextBlock", "text": "Hi Alex, the balance for 12 June is due.", "wrap": true}
                        ],
                        "actions": [
                            {"type": "Action.OpenUrl", "title": "Open in WedSync",
                             "url": "https://app.wedsync.example/n/ntf_01J9ZK3M4N"}
                        ]
                    }
                }]
            }))
        );
    }

    #[test]
    fn teams_plain_message_without_link() {
        let ctx = context(json!({}), json!({"webhook_url": TEAMS_URL}));
        let ctx = without(ctx, &["/alert", "/message/link", "/message/severity"]);
        let body = json_body(&render("teams", &ctx)).clone();
        let content = &body["attachments"][0]["content"];
        assert_eq!(
            content["body"],
            json!([
                {"type": "TextBlock", "text": "Payment failed", "weight": "bolder", "size": "medium", "wrap": true},
                {"type": "TextBlock", "text": "Hi Alex, the balance for 12 June is due.", "wrap": true}
            ])
        );
        assert_eq!(content["actions"], json!([]));
    }

    // -- discord ------------------------------------------------------------

    #[test]
    fn discord_request_is_exact() {
        let ctx = context(json!({}), json!({"webhook_url": DISCORD_URL}));
        let req = render("discord", &ctx);
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, format!("{DISCORD_URL}?wait=true"));
        assert_eq!(req.headers, pairs(&[("User-Agent", "wedsync/0.1.0")]));
        assert_eq!(
            req.body,
            Body::Json(json!({
                "username": "WedSync",
                "content": "Payment failed for Alex & Sam",
                "allowed_mentions": {"parse": []},
                "embeds": [{
                    "title": "Payment failed for Alex & Sam",
                    "description": "Hi Alex, the balance for 12 June is due.",
                    "url": "https://app.wedsync.example/n/ntf_01J9ZK3M4N",
                    "color": 0xE01E5A,
                    "fields": [
                        {"name": "Couple", "value": "Alex & Sam", "inline": true},
                        {"name": "Wedding date", "value": "Saturday 12 June 2027", "inline": true},
                        {"name": "Venue", "value": "Kew Gardens, London", "inline": true},
                        {"name": "Weddings today", "value": "23", "inline": true}
                    ]
                }]
            }))
        );
    }

    #[test]
    fn discord_colours_username_and_thread_query() {
        let colours = [
            ("critical", 0xE01E5A),
            ("error", 0xE8912D),
            ("warning", 0xECB22E),
            ("info", 0x36A64F),
        ];
        for (severity, colour) in colours {
            let ctx = context(json!({}), json!({"webhook_url": DISCORD_URL}));
            let ctx = with(ctx, "/message/severity", json!(severity));
            assert_eq!(
                json_body(&render("discord", &ctx))["embeds"][0]["color"],
                json!(colour),
                "{severity}"
            );
        }
        let ctx = context(
            json!({"username": "Lens & Light"}),
            json!({"webhook_url": "http://127.0.0.1:7000/api/webhooks/1/t?thread_id=99"}),
        );
        let ctx = without(ctx, &["/message/severity", "/alert", "/message/link"]);
        let req = render("discord", &ctx);
        assert_eq!(
            req.url,
            "http://127.0.0.1:7000/api/webhooks/1/t?thread_id=99&wait=true"
        );
        assert_eq!(
            json_body(&req),
            &json!({
                "username": "Lens & Light",
                "content": "Payment failed",
                "allowed_mentions": {"parse": []},
                "embeds": [{"title": "Payment failed", "description": "Hi Alex, the balance for 12 June is due.", "fields": []}]
            })
        );
    }

    // -- pagerduty ----------------------------------------------------------

    #[test]
    fn pagerduty_trigger_is_exact() {
        let req = render("pagerduty", &pd_ctx());
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "https://events.pagerduty.com/v2/enqueue");
        assert_eq!(req.headers, pairs(&[("User-Agent", "wedsync/0.1.0")]));
        assert_eq!(
            req.body,
            Body::Json(json!({
                "routing_key": PD_KEY,
                "event_action": "trigger",
                "dedup_key": "payment-failed/ntf_01J9ZK3M4N",
                "payload": {
                    "summary": "Payment failed for Alex & Sam",
                    "source": "wedsync",
                    "severity": "critical",
                    "group": "studio-ops",
                    "custom_details": {
                        "couple": "Alex & Sam",
                        "wedding_date": "Saturday 12 June 2027",
                        "venue": "Kew Gardens, London",
                        "weddings_today": 23,
                        "notification_id": "ntf_01J9ZK3M4N"
                    }
                }
            }))
        );
    }

    #[test]
    fn pagerduty_acknowledge_and_resolve_have_no_payload() {
        for action in ["acknowledge", "resolve"] {
            let ctx = with(pd_ctx(), "/message/action", json!(action));
            let ctx = with(ctx, "/config/base_url", json!("http://127.0.0.1:8181"));
            let req = render("pagerduty", &ctx);
            assert_eq!(req.url, "http://127.0.0.1:8181/v2/enqueue");
            assert_eq!(
                req.body,
                Body::Json(json!({
                    "routing_key": PD_KEY,
                    "event_action": action,
                    "dedup_key": "payment-failed/ntf_01J9ZK3M4N"
                })),
                "{action}"
            );
        }
    }

    #[test]
    fn pagerduty_defaults_and_summary_limit() {
        let long = "x".repeat(1500);
        let ctx = without(
            pd_ctx(),
            &["/message/action", "/message/dedup_key", "/message/severity"],
        );
        let ctx = with(ctx, "/alert/summary", json!(long));
        let body = json_body(&render("pagerduty", &ctx)).clone();
        assert_eq!(body["event_action"], json!("trigger"));
        assert!(body.get("dedup_key").is_none());
        assert_eq!(
            body["payload"]["severity"],
            json!("critical"),
            "falls back to alert.severity"
        );
        let summary = body["payload"]["summary"].as_str().expect("summary");
        assert_eq!(summary.chars().count(), 1024);
        assert!(summary.ends_with('…'));
    }

    // -- webhook ------------------------------------------------------------

    #[test]
    fn webhook_request_is_exact() {
        let ctx = context(json!({}), json!({"url": HOOK_URL}));
        let req = render("webhook", &ctx);
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, HOOK_URL);
        assert_eq!(
            req.headers,
            pairs(&[
                ("User-Agent", "wedsync/0.1.0"),
                ("Idempotency-Key", "ntf_01J9ZK3M4N-1")
            ])
        );
        assert_eq!(
            req.body,
            Body::Json(json!({
                "id": "ntf_01J9ZK3M4N",
                "channel": "email",
                "to": {"name": "Alex Smith", "email": "alex@example.com", "phone": "+447700900123"},
                "subject": "Your balance is due",
                "text": "Hi Alex, the balance for 12 June is due.",
                "title": "Payment failed",
                "severity": "critical",
                "alert": {
                    "notification_id": "ntf_01J9ZK3M4N",
                    "summary": "Payment failed for Alex & Sam",
                    "couple": "Alex & Sam",
                    "wedding_date": "Saturday 12 June 2027",
                    "venue": "Kew Gardens, London",
                    "weddings_today": 23,
                    "severity": "critical",
                    "escalation": "maximum",
                    "org_name": "Lens & Light"
                }
            }))
        );
    }

    // -- classify -----------------------------------------------------------

    fn no_headers() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn classify_success_extracts_ids() {
        let accepted = |id: Option<&str>| Reply::Accepted {
            provider_id: id.map(str::to_owned),
        };
        let resend = spec("resend");
        assert_eq!(
            resend.classify(
                200,
                &no_headers(),
                br#"{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}"#
            ),
            accepted(Some("49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"))
        );
        assert_eq!(
            spec("mailgun").classify(
                200,
                &no_headers(),
                br#"{"id":"<20270612.1@mg.studio.example>","message":"Queued. Thank you."}"#
            ),
            accepted(Some("<20270612.1@mg.studio.example>"))
        );
        assert_eq!(
            spec("twilio").classify(
                201,
                &no_headers(),
                br#"{"sid":"SM1234567890abcdef1234567890abcdef","status":"queued"}"#
            ),
            accepted(Some("SM1234567890abcdef1234567890abcdef"))
        );
        assert_eq!(
            spec("pagerduty").classify(202, &no_headers(), br#"{"status":"success","message":"Event processed","dedup_key":"payment-failed/ntf_1"}"#),
            accepted(Some("payment-failed/ntf_1"))
        );
        assert_eq!(
            spec("discord").classify(
                200,
                &no_headers(),
                br#"{"id":"1234567890123456789","type":0}"#
            ),
            accepted(Some("1234567890123456789"))
        );
        assert_eq!(
            spec("slack").classify(200, &no_headers(), b"ok"),
            accepted(None)
        );
        assert_eq!(
            spec("teams").classify(202, &no_headers(), b""),
            accepted(None)
        );
        assert_eq!(
            spec("webhook").classify(204, &no_headers(), b""),
            accepted(None)
        );
        assert_eq!(
            resend.classify(200, &no_headers(), b"not json"),
            accepted(None)
        );
    }

    #[test]
    fn classify_rate_limits_use_retry_after() {
        let headers = pairs(&[
            ("content-type", "application/json"),
            ("retry-after", " 30 "),
        ]);
        assert_eq!(
            spec("resend").classify(
                429,
                &headers,
                br#"{"statusCode":429,"message":"Too many requests","name":"rate_limit_exceeded"}"#
            ),
            Reply::Transient {
                reason: "HTTP 429: Too many requests".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        // An HTTP date is ignored.
        let dated = pairs(&[("Retry-After", "Fri, 31 Dec 1999 23:59:59 GMT")]);
        assert_eq!(
            spec("slack").classify(429, &dated, b"rate_limited"),
            Reply::Transient {
                reason: "HTTP 429: rate_limited".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn classify_discord_rate_limit_reads_the_body() {
        let body =
            br#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#;
        let discord = spec("discord");
        assert_eq!(
            discord.classify(429, &no_headers(), body),
            Reply::Transient {
                reason: "HTTP 429: You are being rate limited.".into(),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
        // With both, the longer wait wins.
        let headers = pairs(&[("Retry-After", "2")]);
        assert!(matches!(
            discord.classify(429, &headers, body),
            Reply::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
    }

    #[test]
    fn classify_transient_and_permanent_statuses() {
        let twilio = spec("twilio");
        assert_eq!(
            twilio.classify(500, &no_headers(), b""),
            Reply::Transient {
                reason: "HTTP 500".into(),
                retry_after: None
            }
        );
        for status in [408, 425, 502, 503, 504, 599] {
            assert!(
                matches!(
                    twilio.classify(status, &no_headers(), b""),
                    Reply::Transient { .. }
                ),
                "{status}"
            );
        }
        let body = br#"{"code": 21211, "message": "The 'To' number +4412 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            twilio.classify(400, &no_headers(), body),
            Reply::Permanent {
                reason: "HTTP 400: The 'To' number +4412 is not a valid phone number.".into()
            }
        );
        assert_eq!(
            spec("teams").classify(400, &no_headers(), br#"{"error":{"code":"InvalidRequestContent","message":"The input body for trigger 'manual' of type 'Request' did not match its schema."}}"#),
            Reply::Permanent { reason: "HTTP 400: The input body for trigger 'manual' of type 'Request' did not match its schema.".into() }
        );
        assert_eq!(
            spec("slack").classify(404, &no_headers(), b"no_service"),
            Reply::Permanent {
                reason: "HTTP 404: no_service".into()
            }
        );
        // Retry-After means nothing on a permanent refusal.
        assert_eq!(
            spec("mailgun").classify(401, &pairs(&[("Retry-After", "5")]), b"Forbidden"),
            Reply::Permanent {
                reason: "HTTP 401: Forbidden".into()
            }
        );
        assert!(matches!(
            twilio.classify(302, &no_headers(), b""),
            Reply::Permanent { .. }
        ));

        let mut custom = spec("webhook");
        custom.response.transient_statuses = vec![409];
        assert!(matches!(
            custom.classify(409, &no_headers(), b""),
            Reply::Transient { .. }
        ));
        assert!(matches!(
            spec("webhook").classify(409, &no_headers(), b""),
            Reply::Permanent { .. }
        ));
    }

    #[test]
    fn classify_falls_back_to_a_body_excerpt() {
        let body = format!("<html>\n<body>{}</body></html>", "é".repeat(400));
        let Reply::Permanent { reason } =
            spec("webhook").classify(403, &no_headers(), body.as_bytes())
        else {
            panic!("permanent")
        };
        let excerpt = reason.strip_prefix("HTTP 403: ").expect("prefix");
        assert_eq!(excerpt.chars().count(), BODY_EXCERPT_CHARS);
        assert!(excerpt.starts_with("<html> <body>éé"));
        // The error pointer missing from a JSON body also falls back.
        assert_eq!(
            spec("resend").classify(422, &no_headers(), br#"{"error":"bad"}"#),
            Reply::Permanent {
                reason: r#"HTTP 422: {"error":"bad"}"#.into()
            }
        );
    }

    // -- validate_settings --------------------------------------------------

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn errors(kind: &str, config: Value, secrets: Value) -> Vec<(String, String)> {
        spec(kind)
            .validate_settings(&obj(config), &obj(secrets))
            .expect_err("invalid settings")
    }

    #[test]
    fn validate_settings_accepts_complete_settings() {
        let mailgun = spec("mailgun");
        let ok = mailgun.validate_settings(
            &obj(json!({"domain": "mg.studio.example", "base_url": "https://api.eu.mailgun.net", "from": ""})),
            &obj(json!({"api_key": MAILGUN_KEY})),
        );
        assert_eq!(ok, Ok(()));
        assert_eq!(
            spec("slack").validate_settings(&Map::new(), &obj(json!({"webhook_url": SLACK_URL}))),
            Ok(())
        );
    }

    #[test]
    fn validate_settings_names_missing_and_unknown_fields() {
        assert_eq!(
            errors(
                "mailgun",
                json!({"domian": "mg.studio.example", "base_url": "api.eu.mailgun.net"}),
                json!({"api_key": " ", "token": "x"})
            ),
            pairs(&[
                ("config.domain", "required"),
                ("config.base_url", "must be an http(s) URL"),
                ("config.domian", "unknown field"),
                ("secrets.api_key", "required"),
                ("secrets.token", "unknown field"),
            ])
        );
        assert_eq!(
            errors(
                "twilio",
                json!({"account_sid": 12}),
                json!({"auth_token": TWILIO_TOKEN})
            ),
            pairs(&[
                ("config.account_sid", "must be a string"),
                (
                    "config.from",
                    "one of config.from, config.messaging_service_sid is required"
                ),
            ])
        );
        assert_eq!(
            spec("twilio").validate_settings(
                &obj(json!({"account_sid": TWILIO_SID, "messaging_service_sid": "MG1"})),
                &obj(json!({"auth_token": TWILIO_TOKEN}))
            ),
            Ok(())
        );
    }

    #[test]
    fn validate_settings_never_quotes_values() {
        let errs = errors(
            "discord",
            json!({}),
            json!({"webhook_url": "discord-secret-token"}),
        );
        assert_eq!(
            errs,
            pairs(&[("secrets.webhook_url", "must be an http(s) URL")])
        );
    }

    // -- render errors and secrecy -------------------------------------------

    #[test]
    fn fuel_exhaustion_is_a_render_error() {
        let mut spec = spec("resend");
        spec.request.headers.push((
            "X-Loop".into(),
            "{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}"
                .into(),
        ));
        let err = render_err(&spec, &resend_ctx());
        assert_eq!(
            err,
            RenderError::Template {
                provider: "resend".into(),
                field: "request.headers.X-Loop".into(),
                message: "engine ran out of fuel".into(),
            }
        );

        let mut spec = self::spec("resend");
        // Body string leaves are bounded too (fuel counts template instructions, not
        // the work inside builtin filters).
        spec.request.body["text"] = json!("{% for i in range(100000) %}.{% endfor %}");
        let err = render_err(&spec, &resend_ctx());
        assert_eq!(err.field(), "request.body.text");
        assert!(err.to_string().contains("engine ran out of fuel"), "{err}");
    }

    #[test]
    fn malformed_templates_are_render_errors() {
        let mut spec = spec("resend");
        spec.request.url = "{{ config.base_url ".into();
        let err = render_err(&spec, &resend_ctx());
        assert!(
            matches!(&err, RenderError::Template { field, message, .. }
            if field == "request.url" && message.starts_with("syntax error")),
            "{err:?}"
        );

        let mut spec = self::spec("resend");
        spec.request.body["subject"] = json!("{{ message.subject | no_such_filter }}");
        let err = render_err(&spec, &resend_ctx());
        assert_eq!(err.field(), "request.body.subject");
        assert!(err.to_string().contains("no_such_filter"), "{err}");
    }

    #[test]
    fn missing_secret_or_bad_url_is_a_render_error() {
        let ctx = without(resend_ctx(), &["/secrets/api_key"]);
        assert_eq!(
            render_err(&spec("resend"), &ctx),
            RenderError::Invalid {
                provider: "resend".into(),
                field: "request.auth.token".into(),
                message: "rendered empty (is the secret or setting missing?)".into(),
            }
        );
        let ctx = context(json!({}), json!({"webhook_url": "slack-secret-token"}));
        let err = render_err(&spec("slack"), &ctx);
        assert_eq!(err.field(), "request.url");
        assert!(!format!("{err} {err:?}").contains("slack-secret-token"));
        assert!(matches!(
            spec("slack").render(&json!("not an object")),
            Err(RenderError::Invalid { .. })
        ));
    }

    #[test]
    fn header_injection_is_refused() {
        let ctx = with(
            resend_ctx(),
            "/message/idempotency_key",
            json!("k\r\nX-Evil: 1"),
        );
        assert_eq!(
            render_err(&spec("resend"), &ctx).field(),
            "message.idempotency_key"
        );
    }

    #[test]
    fn render_errors_never_contain_secrets() {
        // A template that puts the secret into MiniJinja's own error message.
        let mut spec = spec("resend");
        spec.request.body["subject"] = json!("{{ none | required(secrets.api_key) }}");
        let err = render_err(&spec, &resend_ctx());
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("[redacted] is required"), "{shown}");
        assert!(!shown.contains(RESEND_KEY), "{shown}");

        spec.request.body["subject"] = json!("{{ secrets.api_key + 1 }}");
        let err = render_err(&spec, &resend_ctx());
        assert!(!format!("{err} {err:?}").contains(RESEND_KEY));
    }

    #[test]
    fn request_debug_output_hides_secrets() {
        let cases = [
            (
                "resend",
                json!({}),
                json!({"api_key": RESEND_KEY}),
                vec![RESEND_KEY],
            ),
            (
                "mailgun",
                json!({"domain": "mg.x"}),
                json!({"api_key": MAILGUN_KEY}),
                vec![MAILGUN_KEY, MAILGUN_BASIC],
            ),
            (
                "twilio",
                json!({"account_sid": TWILIO_SID, "from": "+1"}),
                json!({"auth_token": TWILIO_TOKEN}),
                vec![TWILIO_TOKEN, TWILIO_BASIC],
            ),
            (
                "slack",
                json!({}),
                json!({"webhook_url": SLACK_URL}),
                vec![SLACK_URL],
            ),
            (
                "teams",
                json!({}),
                json!({"webhook_url": TEAMS_URL}),
                vec![TEAMS_URL],
            ),
            (
                "discord",
                json!({}),
                json!({"webhook_url": DISCORD_URL}),
                vec![DISCORD_URL, "discord-secret-token"],
            ),
            (
                "pagerduty",
                json!({}),
                json!({"routing_key": PD_KEY}),
                vec![PD_KEY],
            ),
            (
                "webhook",
                json!({}),
                json!({"url": HOOK_URL}),
                vec![HOOK_URL, "hook-secret-token"],
            ),
        ];
        for (kind, config, secrets, hidden) in cases {
            let req = render(kind, &context(config, secrets));
            let debug = format!("{req:?} {req:#?}");
            assert!(debug.contains("[redacted]"), "{kind}: {debug}");
            for secret in hidden {
                assert!(!debug.contains(secret), "{kind} leaks {secret}: {debug}");
            }
        }
    }

    // -- template helpers ---------------------------------------------------

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression("{{ message.to }}"), Some("message.to"));
        assert_eq!(single_expression("  {{- alert -}}\n"), Some("alert"));
        assert_eq!(single_expression("{{ -1 }}"), Some("-1"));
        assert_eq!(single_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(single_expression("x {{ a }}"), None);
        assert_eq!(single_expression("{{ }}"), None);
        assert_eq!(single_expression("{% if a %}{{ a }}{% endif %}"), None);
    }

    #[test]
    fn mailbox_quotes_names_when_needed() {
        assert_eq!(
            format_mailbox(Some("Alex Smith"), "alex@example.com"),
            "Alex Smith <alex@example.com>"
        );
        assert_eq!(
            format_mailbox(Some("Zoë O'Neil"), "z@example.com"),
            "Zoë O'Neil <z@example.com>"
        );
        assert_eq!(
            format_mailbox(Some("Smith, Alex"), "a@example.com"),
            "\"Smith, Alex\" <a@example.com>"
        );
        assert_eq!(
            format_mailbox(Some("A\r\nBcc: x@evil"), "a@example.com"),
            "\"A  Bcc: x@evil\" <a@example.com>"
        );
        assert_eq!(format_mailbox(None, " a@example.com "), "a@example.com");
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo", 4), "hél…");
        assert_eq!(clip("héllo", 0), "");
    }
}
