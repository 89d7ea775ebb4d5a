//! Web Push: the payload encrypted for the browser (RFC 8291, `aes128gcm`) and signed for
//! the push service with VAPID (RFC 8292), through `web-push-native`. The hub has one VAPID
//! key pair, derived from the master key, so every node signs alike and browsers subscribe
//! with one `applicationServerKey`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::jwt_simple::algorithms::{ECDSAP256KeyPairLike as _, ES256KeyPair};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;
use web_push_native::{Auth, WebPushBuilder, p256};
use wedsync_core::notify::PushSubscription;

/// The label the VAPID key is derived under.
pub const KEY_LABEL: &str = "wedsync/vapid/v1";

/// The hub's VAPID identity.
pub struct Vapid {
    keypair: ES256KeyPair,
    public_key: String,
    subject: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A push request, ready to send.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The push service URL.
    pub url: String,
    /// Headers (`TTL`, `Content-Encoding: aes128gcm`, `Authorization: vapid t=…, k=…`, …).
    pub headers: Vec<(String, String)>,
    /// The encrypted body.
    pub body: Vec<u8>,
}

impl Vapid {
    /// The key pair whose private scalar is `seed` (32 bytes, e.g. derived from the master
    /// key), identified by `subject` (`mailto:` or `https:`, as RFC 8292 asks).
    pub fn from_seed(seed: &[u8; 32], subject: &str) -> Result<Self, String> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err("the VAPID subject must be a mailto: or https: URL".into());
        }
        let keypair = ES256KeyPair::from_bytes(seed).map_err(|e| format!("VAPID key: {e}"))?;
        let public = p256::SecretKey::from_slice(seed)
            .map_err(|_| "VAPID key: not a P-256 scalar".to_owned())?
            .public_key()
            .to_encoded_point(false);
        Ok(Self {
            public_key: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            keypair,
            subject: subject.to_owned(),
        })
    }

    /// The public key browsers pass as `applicationServerKey` (base64url, uncompressed).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Encrypts `payload` for `subscription` and signs the request.
    pub fn request(
        &self,
        subscription: &PushSubscription,
        payload: &[u8],
        ttl: Duration,
    ) -> Result<PushRequest, String> {
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok();
        let ua_public = decode(&subscription.keys.p256dh)
            .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
            .ok_or("the subscription's p256dh key is not a P-256 public key")?;
        let auth: [u8; 16] = decode(&subscription.keys.auth)
            .and_then(|a| a.try_into().ok())
            .ok_or("the subscription's auth secret is not 16 bytes")?;
        let endpoint = subscription
            .endpoint
            .parse()
            .map_err(|_| "the subscription's endpoint is not a URL")?;
        let request = WebPushBuilder::new(endpoint, ua_public, Auth::from(auth))
            .with_valid_duration(ttl)
            .build(payload.to_vec())
            .map_err(|e| format!("building the push request: {e}"))?;
        let mut headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // The VAPID token is signed here rather than by the library, whose audience leaves
        // out a non-default port; RFC 8292's `aud` is the push resource's whole origin.
        let origin = url::Url::parse(&subscription.endpoint)
            .map_err(|_| "the subscription's endpoint is not a URL")?
            .origin()
            .ascii_serialization();
        let claims = Claims::create(ttl.min(Duration::from_secs(24 * 60 * 60)).into())
            .with_audience(origin)
            .with_subject(&self.subject);
        let token = self
            .keypair
            .sign(claims)
            .map_err(|e| format!("signing the VAPID token: {e}"))?;
        headers.push((
            "authorization".into(),
            format!("vapid t={token}, k={}", self.public_key),
        ));
        Ok(PushRequest {
            url: subscription.endpoint.clone(),
            headers,
            body: request.into_body(),
        })
    }
}
