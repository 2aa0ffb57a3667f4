//! The keys of the processes' identities: their configuration and their form. Apart from
//! [`super::Identity`] so that the topology's configuration can hold them.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::SigningKey;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

/// `[topology.identity]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// This process's Ed25519 seed, base64 (secret).
    pub key: Option<String>,
    /// Every process's public key, base64, by process name.
    pub public_keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("public_keys", &self.public_keys)
            .finish()
    }
}

impl IdentityConfig {
    /// Checks the keys' form; the error names the key and never echoes it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(key) = &self.key {
            seed_of(key).map_err(|r| ("topology.identity.key".to_owned(), r))?;
        }
        for (process, key) in &self.public_keys {
            public_key_of(key)
                .map_err(|r| (format!("topology.identity.public_keys.{process}"), r))?;
        }
        Ok(())
    }
}

/// A new key pair: the seed (secret) and the public key, both base64.
pub fn new_key_pair() -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    (STANDARD.encode(seed), STANDARD.encode(public))
}

pub(crate) fn seed_of(text: &str) -> Result<[u8; 32], String> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| "must be 32 bytes, base64 (see `banyan identity new`)".to_owned())
}

pub(crate) fn public_key_of(text: &str) -> Result<DecodingKey, String> {
    let bytes = seed_of(text)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "is not an Ed25519 public key".to_owned())?;
    DecodingKey::from_ed_components(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
        .map_err(|e| e.to_string())
}
