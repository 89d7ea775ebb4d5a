//! Helpers shared by the integration tests.
//!
//! Expected signatures are computed here straight from the `hmac`, `hex` and
//! `base64` crates over hand-built strings, independently of the crate's own
//! signed-content assembly.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wedsync_inbound::{Headers, InboundRequest};

/// `now` at a whole unix second.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("timestamp in range")
}

/// `now` at a unix millisecond.
pub fn at_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).expect("timestamp in range")
}

/// A POST to a fixed URL.
pub fn post<'a, H: Headers + ?Sized>(headers: &'a H, body: &'a [u8]) -> InboundRequest<'a, H> {
    InboundRequest {
        method: "POST",
        url: "https://hub.wedsync.example/inbound/webhook",
        headers,
        body,
    }
}

/// Raw HMAC-SHA256 of `message`.
pub fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    hex::encode(hmac(key, message))
}

/// Standard base64 HMAC-SHA256.
pub fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    STANDARD.encode(hmac(key, message))
}

/// Standard base64 encoding.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64 decoding.
pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD.decode(text).expect("valid base64")
}

/// Concatenates byte pieces, the way a test spells out a signed string.
pub fn concat(pieces: &[&[u8]]) -> Vec<u8> {
    pieces.concat()
}
