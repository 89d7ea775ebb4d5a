//! Secrets at rest: AES-256-GCM under the operator's master key.
//!
//! A sealed value is `base64(nonce ‖ ciphertext ‖ tag)` with a fresh random 96-bit nonce, and
//! the row it belongs to (e.g. the source id) as associated data, so a sealed secret copied
//! into another row does not open. The master key comes from configuration
//! (`secrets.master_key`), or for the embedded default from `master.key` in the data dir,
//! created on first run.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::{StoreError, StoreResult};

/// The 256-bit key that seals every stored secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Parses a base64-encoded 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must decode to exactly 32 bytes".to_owned())?;
        Ok(Self(key))
    }

    /// The key as base64, for writing the key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Reads the key file at `path`, creating it (mode 0600) with a new key if it is missing.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                write_private(path, &key.to_base64())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                tracing::warn!(path = %path.display(), "generated a new master key for stored secrets; back it up");
                Ok(key)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// A key for another purpose (signing links, …), derived from this one with
    /// HMAC-SHA256 over `label`, so the master key itself never signs anything public.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Seals `plaintext` for the row identified by `aad`.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> StoreResult<String> {
        let cipher = Aes256Gcm::new_from_slice(&self.0)
            .map_err(|_| StoreError::Config("bad master key".into()))?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Config("sealing a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens a value sealed for `aad`; fails if it was sealed under another key or row.
    pub fn open(&self, aad: &str, sealed: &str) -> StoreResult<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| StoreError::Config("a stored secret is corrupt".into()))?;
        if bytes.len() < 12 + 16 {
            return Err(StoreError::Config("a stored secret is corrupt".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| StoreError::Config("a stored secret is corrupt".into()))?;
        let cipher = Aes256Gcm::new_from_slice(&self.0)
            .map_err(|_| StoreError::Config("bad master key".into()))?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Config("a stored secret does not open with this master key".into())
            })
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_bind_key_and_row() {
        let key = MasterKey::generate();
        let sealed = key.seal("src_a", b"whsec_topsecret").expect("seal");
        assert!(!sealed.contains("topsecret"));
        assert_eq!(
            key.open("src_a", &sealed).expect("open"),
            b"whsec_topsecret"
        );
        assert!(
            key.open("src_b", &sealed).is_err(),
            "another row's secret does not open"
        );
        assert!(
            MasterKey::generate().open("src_a", &sealed).is_err(),
            "another key does not open it"
        );
        assert_ne!(
            key.seal("src_a", b"x").expect("seal"),
            key.seal("src_a", b"x").expect("seal"),
            "fresh nonce"
        );
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&path).expect("create");
        let b = MasterKey::load_or_create(&path).expect("load");
        assert_eq!(a.to_base64(), b.to_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }
}
