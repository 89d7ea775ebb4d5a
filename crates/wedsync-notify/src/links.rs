//! Signed public links in emails: one-click unsubscribe (RFC 8058), the open pixel and
//! click redirects. Each carries the notification id and an HMAC over it (and, for clicks,
//! the target URL), so nobody can unsubscribe someone else or turn the redirect into an
//! open redirector. The key is derived from the master key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// One-click unsubscribe.
    Unsubscribe,
    /// The open pixel.
    Open,
    /// A click redirect.
    Click,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Self::Unsubscribe => "unsubscribe",
            Self::Open => "open",
            Self::Click => "click",
        }
    }
}

/// Makes and checks signed links under the hub's public base URL.
#[derive(Clone)]
pub struct Links {
    base: String,
    key: [u8; 32],
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The label the link key is derived under.
pub const KEY_LABEL: &str = "wedsync/notify-links/v1";

impl Links {
    /// Links under `base` (the hub's public URL), signed with `key`.
    pub fn new(base: &str, key: [u8; 32]) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
        }
    }

    fn sign(&self, purpose: Purpose, id: &str, extra: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.label().as_bytes());
        mac.update(b"\n");
        mac.update(id.as_bytes());
        mac.update(b"\n");
        mac.update(extra.as_bytes());
        // 128 bits is plenty for a link and keeps URLs short.
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }

    /// Whether `signature` is right for the link, compared in constant time.
    pub fn verify(&self, purpose: Purpose, id: &str, extra: &str, signature: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.sign(purpose, id, extra);
        expected.as_bytes().ct_eq(signature.as_bytes()).into()
    }

    /// The one-click unsubscribe URL (`List-Unsubscribe`, and the footer link).
    pub fn unsubscribe(&self, id: &str) -> String {
        format!(
            "{}/u/{id}/{}",
            self.base,
            self.sign(Purpose::Unsubscribe, id, "")
        )
    }

    /// The open pixel's URL.
    pub fn open_pixel(&self, id: &str) -> String {
        format!(
            "{}/t/o/{id}/{}",
            self.base,
            self.sign(Purpose::Open, id, "")
        )
    }

    /// A click redirect to `target`.
    pub fn click(&self, id: &str, target: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        format!(
            "{}/t/c/{id}/{}?u={encoded}",
            self.base,
            self.sign(Purpose::Click, id, target)
        )
    }

    /// Rewrites every `href="http…"` in `html` into a click redirect (except our own
    /// links) and adds the open pixel before `</body>` (or at the end).
    pub fn track_html(&self, id: &str, html: &str) -> String {
        let mut out = String::with_capacity(html.len() + 256);
        let mut rest = html;
        while let Some(pos) = rest.find("href=\"") {
            let (before, after) = rest.split_at(pos + 6);
            out.push_str(before);
            let Some(end) = after.find('"') else {
                rest = after;
                break;
            };
            let raw = &after[..end];
            // The template's HTML escaping turned & into &amp;: the real URL is unescaped.
            let target = raw.replace("&amp;", "&");
            if (target.starts_with("http://") || target.starts_with("https://"))
                && !target.starts_with(&self.base)
            {
                out.push_str(&self.click(id, &target).replace('&', "&amp;"));
            } else {
                out.push_str(raw);
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            self.open_pixel(id)
        );
        match out.rfind("</body>") {
            Some(at) => out.insert_str(at, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links::new("https://hub.example/", [7; 32])
    }

    #[test]
    fn signatures_verify_only_for_their_purpose_id_and_target() {
        let l = links();
        let url = l.unsubscribe("ntf_1");
        let sig = url.rsplit('/').next().expect("sig");
        assert!(l.verify(Purpose::Unsubscribe, "ntf_1", "", sig));
        assert!(!l.verify(Purpose::Unsubscribe, "ntf_2", "", sig));
        assert!(!l.verify(Purpose::Open, "ntf_1", "", sig));
        let other = Links::new("https://hub.example", [8; 32]);
        assert!(!other.verify(Purpose::Unsubscribe, "ntf_1", "", sig));
    }

    #[test]
    fn html_links_become_signed_redirects_and_a_pixel_is_added() {
        let l = links();
        let html = "<body><a href=\"https://studio.example/gallery?a=1&amp;b=2\">x</a><a href=\"mailto:a@b\">m</a></body>";
        let out = l.track_html("ntf_1", html);
        let click = l
            .click("ntf_1", "https://studio.example/gallery?a=1&b=2")
            .replace('&', "&amp;");
        assert!(out.contains(&click), "{out}");
        assert!(out.contains("href=\"mailto:a@b\""));
        assert!(out.contains(&format!("<img src=\"{}\"", l.open_pixel("ntf_1"))));
        assert!(out.ends_with("</body>"));
    }
}
