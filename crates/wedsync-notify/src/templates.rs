//! Message templates: MiniJinja with fuel and size limits, HTML auto-escaped, and the
//! wedding context every template sees.
//!
//! A template has a subject (email), a plain-text body and an optional HTML body. Templates
//! are compiled when saved, so a syntax error is reported to whoever wrote it, with the
//! field and line; rendering is bounded by fuel (instructions) and by output size, so a
//! user's template cannot stall a worker.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Value, json};
use wedsync_core::couple::Couple;
use wedsync_core::notify::weekday_name;
use wedsync_core::org::Organization;
use wedsync_core::validate::ValidationErrors;
use wedsync_store::notify::{Recipient, Settings};

/// The largest template source, per field.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// The largest rendered output, per field.
pub const MAX_OUTPUT_BYTES: usize = 512 * 1024;
/// Instructions one render may run.
pub const FUEL: u64 = 100_000;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // A missing value renders empty, but using it as an object is an error worth seeing.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
});

/// Rendered content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject (email), one line.
    pub subject: Option<String>,
    /// Plain text.
    pub text: String,
    /// HTML (email).
    pub html: Option<String>,
}

/// A template that failed, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TemplateError {
    /// `subject`, `text` or `html`.
    pub field: String,
    /// What is wrong, with the line when known.
    pub message: String,
}

fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

fn file_name(field: &str) -> &'static str {
    match field {
        "html" => "body.html",
        "subject" => "subject.txt",
        _ => "body.txt",
    }
}

/// Checks that each template compiles and is within size limits, as a template is saved.
pub fn check(
    subject: Option<&str>,
    text: &str,
    html: Option<&str>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    for (field, source) in [("subject", subject), ("text", Some(text)), ("html", html)] {
        let Some(source) = source else { continue };
        if source.len() > MAX_SOURCE_BYTES {
            errors.add(
                field,
                format!("a template is at most {MAX_SOURCE_BYTES} bytes"),
            );
            continue;
        }
        if let Err(e) = ENV.template_from_named_str(file_name(field), source) {
            errors.add(field, describe(&e));
        }
    }
    errors.into_result(())
}

fn render_one(field: &str, source: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
    let fail = |message: String| TemplateError {
        field: field.to_owned(),
        message,
    };
    if source.len() > MAX_SOURCE_BYTES {
        return Err(fail(format!(
            "a template is at most {MAX_SOURCE_BYTES} bytes"
        )));
    }
    let out = ENV
        .template_from_named_str(file_name(field), source)
        .and_then(|t| t.render(ctx.clone()))
        .map_err(|e| fail(describe(&e)))?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(fail(format!(
            "renders to more than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Renders a template's parts against `ctx`. The subject is folded onto one line.
pub fn render(
    subject: Option<&str>,
    text: &str,
    html: Option<&str>,
    ctx: &Value,
) -> Result<Rendered, TemplateError> {
    let ctx = minijinja::Value::from(Serde(ctx));
    let subject = subject
        .map(|s| render_one("subject", s, &ctx))
        .transpose()?
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
    Ok(Rendered {
        subject,
        text: render_one("text", text, &ctx)?,
        html: html.map(|h| render_one("html", h, &ctx)).transpose()?,
    })
}

/// "Saturday 12 June 2027".
pub fn long_date(date: chrono::NaiveDate) -> String {
    format!("{} {}", weekday_name(date), date.format("%-d %B %Y"))
}

/// The names of a couple as people write them: "Alex & Sam".
pub fn couple_names(couple: &Couple) -> String {
    let first = |name: &str| name.split_whitespace().next().unwrap_or(name).to_owned();
    couple
        .partners
        .iter()
        .map(|p| first(&p.name))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// The context a template renders with:
/// - `recipient`: `name`, `email`, `phone`;
/// - `couple` (when the message is about one): `names` ("Alex & Sam"), `partners`
///   (`name`, `first_name`, `email`, `phone`), `wedding_date` (ISO), `wedding_date_long`
///   ("Saturday 12 June 2027", the couple's own calendar date), `days_until` (from today in
///   the couple's zone), `time_zone`, `venue` (`name`, `address`);
/// - `vendor`: the organisation's `name` and `time_zone`, plus its branding (`logo_url`,
///   `colour`, `website`, `signature`, …);
/// - `data`: the caller's values, also merged at the top level for short templates
///   (`{{ invoice_total }}`), without overriding the names above.
pub fn context(
    org: &Organization,
    settings: &Settings,
    couple: Option<&Couple>,
    recipient: &Recipient,
    data: &Value,
    now: DateTime<Utc>,
) -> Value {
    let mut vendor = json!({ "name": org.name, "time_zone": org.time_zone });
    if let Some(v) = vendor.as_object_mut() {
        for (k, value) in &settings.branding {
            v.entry(k.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
    }
    let couple_value = couple.map(|c| {
        let today = wedsync_core::org::TimeZone::parse(&c.time_zone)
            .map(|z| now.with_timezone(&z.tz()).date_naive())
            .unwrap_or_else(|_| now.date_naive());
        json!({
            "id": c.id,
            "names": couple_names(c),
            "partners": c.partners.iter().map(|p| json!({
                "name": p.name,
                "first_name": p.name.split_whitespace().next().unwrap_or(&p.name),
                "email": p.email,
                "phone": p.phone,
            })).collect::<Vec<_>>(),
            "wedding_date": c.wedding_date.to_string(),
            "wedding_date_long": long_date(c.wedding_date),
            "days_until": (c.wedding_date - today).num_days(),
            "time_zone": c.time_zone,
            "venue": { "name": c.venue.name, "address": c.venue.address },
        })
    });
    let mut ctx = json!({
        "recipient": {
            "name": recipient.name,
            "first_name": recipient.name.as_deref().and_then(|n| n.split_whitespace().next()),
            "email": recipient.email,
            "phone": recipient.phone,
        },
        "couple": couple_value,
        "vendor": vendor,
        "data": data,
    });
    if let (Some(top), Some(extra)) = (ctx.as_object_mut(), data.as_object()) {
        for (k, v) in extra {
            top.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    ctx
}

/// Sample data for previews: a couple marrying in 120 days at a named venue.
pub fn sample_context(
    org: &Organization,
    settings: &Settings,
    data: &Value,
    now: DateTime<Utc>,
) -> Value {
    let zone = wedsync_core::org::TimeZone::parse(&org.time_zone)
        .map(|z| z.tz())
        .unwrap_or(chrono_tz::UTC);
    let date = now.with_timezone(&zone).date_naive() + chrono::Days::new(120);
    let couple = Couple {
        id: wedsync_core::id::CoupleId::new_at(now),
        partners: vec![
            wedsync_core::couple::Partner {
                name: "Alex Morgan".into(),
                email: Some("alex@example.com".into()),
                phone: Some("+447700900123".into()),
                preferred_channel: wedsync_core::couple::Channel::Email,
            },
            wedsync_core::couple::Partner {
                name: "Sam Taylor".into(),
                email: Some("sam@example.com".into()),
                phone: None,
                preferred_channel: wedsync_core::couple::Channel::Email,
            },
        ],
        wedding_date: date,
        time_zone: org.time_zone.clone(),
        venue: wedsync_core::couple::Venue {
            name: Some("Kew Gardens".into()),
            address: Some("Richmond, London TW9 3AE".into()),
            latitude: None,
            longitude: None,
        },
        notes: None,
        created_at: now,
        updated_at: now,
    };
    let recipient = Recipient {
        name: Some("Alex Morgan".into()),
        email: Some("alex@example.com".into()),
        phone: Some("+447700900123".into()),
        ..Default::default()
    };
    context(org, settings, Some(&couple), &recipient, data, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of the ready-made journeys renders against the context the notification
    /// worker gives it, naming the recipient and the date, with nothing left blank.
    #[test]
    fn the_ready_made_journeys_render_with_the_wedding_context() {
        let now = DateTime::parse_from_rfc3339("2027-03-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let org = Organization {
            id: wedsync_core::id::OrgId::new_at(now),
            name: "Lens & Lace".into(),
            time_zone: "Europe/London".into(),
            tier: wedsync_core::org::Tier::Professional,
            country: "GB".into(),
            currency: "GBP".into(),
            created_at: now,
            updated_at: now,
        };
        let mut settings = Settings::default();
        settings
            .branding
            .insert("review_url".into(), "https://example.com/review".into());
        let ctx = sample_context(&org, &settings, &json!({}), now);
        let mut rendered = 0;
        for (key, _, doc) in wedsync_journeys::templates() {
            for node in doc["nodes"].as_array().into_iter().flatten() {
                let data = &node["data"];
                let Some(text) = data["text"].as_str() else {
                    continue;
                };
                let r = render(data["subject"].as_str(), text, None, &ctx)
                    .unwrap_or_else(|e| panic!("{key}/{}: {e:?}", node["id"]));
                let all = format!("{} {}", r.subject.unwrap_or_default(), r.text);
                assert!(!all.contains("{{") && !all.contains(" ,"), "{key}: {all}");
                if text.contains("recipient.first_name") {
                    assert!(all.contains("Alex"), "{key}: {all}");
                }
                if text.contains("wedding_date_long") {
                    assert!(all.contains("2027"), "{key}: {all}");
                }
                if text.contains("review_url") {
                    assert!(all.contains("https://example.com/review"), "{key}: {all}");
                }
                rendered += 1;
            }
        }
        assert!(rendered >= 4, "{rendered}");
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let ctx = json!({ "name": "<Alex & Sam>" });
        let r = render(
            Some("Hi {{ name }}"),
            "Dear {{ name }}",
            Some("<p>{{ name }}</p>"),
            &ctx,
        )
        .expect("render");
        assert_eq!(r.subject.as_deref(), Some("Hi <Alex & Sam>"));
        assert_eq!(r.text, "Dear <Alex & Sam>");
        assert_eq!(r.html.as_deref(), Some("<p>&lt;Alex &amp; Sam&gt;</p>"));
    }

    #[test]
    fn syntax_errors_name_the_field_and_line() {
        let e = check(Some("ok"), "line one\n{{ broken", None).expect_err("bad");
        assert_eq!(e.0[0].field, "text");
        assert!(e.0[0].message.contains("line 2"), "{}", e.0[0].message);
        assert!(
            check(
                Some("{{ a }}"),
                "{% for x in y %}{{ x }}{% endfor %}",
                Some("<b>{{ z }}</b>")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let e = render(
            None,
            "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}",
            None,
            &json!({}),
        )
        .expect_err("fuel");
        assert_eq!(e.field, "text");
        assert!(e.message.to_lowercase().contains("fuel"), "{}", e.message);
    }

    #[test]
    fn subjects_are_one_line() {
        let r = render(
            Some("Hello\r\nBcc: evil@example.com"),
            "x",
            None,
            &json!({}),
        )
        .expect("render");
        assert_eq!(r.subject.as_deref(), Some("Hello Bcc: evil@example.com"));
    }
}
