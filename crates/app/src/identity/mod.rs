//! Each process of a split its own identity: an Ed25519 key of its own, and the public keys of
//! every process of the topology.
//!
//! Every call between processes (bus requests, pushed events, registrations) carries a short
//! token (a JWT, EdDSA) that this process signs with its key, naming it (`iss`) and valid for
//! [`TOKEN_LIFETIME`]; the receiver checks it against the public key the configuration gives
//! that process. So a process proves which process of the topology it is, a stolen
//! configuration file opens nothing (it holds public keys only), and a process can speak only
//! for its own modules: it may publish the events of the modules the topology places in it
//! (payments cannot publish `orders.order_confirmed.v1`), and register only those modules.
//!
//! Keys are 32-byte Ed25519 seeds, base64: `topology.identity.key` (this process's, secret;
//! `BANYAN_TOPOLOGY__IDENTITY__KEY`) and `topology.identity.public_keys.<process>`; `banyan
//! identity new` makes a pair. A development run on loopback without them generates each
//! process's key once into `server.state_dir/identity/` and reads the others' public keys
//! from there, like the development secrets.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::http::HeaderValue;
use banyan_bus::http::{MessageKind, Peers};
use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::topology::TopologyConfig;

pub(crate) mod keys;

pub use keys::{IdentityConfig, new_key_pair};
use keys::{public_key_of, seed_of};

/// How long a token this process signs is accepted; it signs a new one well before.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const AUDIENCE: &str = "banyan-processes";

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7): what the JWT library reads.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// This process's identity and its knowledge of the others'. See the [module docs](self).
pub struct Identity {
    process: String,
    encoding: EncodingKey,
    /// The current token as a header value, and when to sign the next (seconds).
    current: RwLock<(HeaderValue, u64)>,
    configured: BTreeMap<String, DecodingKey>,
    /// Development only: where the other processes' public keys are found.
    dir: Option<PathBuf>,
    found: RwLock<HashMap<String, DecodingKey>>,
    /// Tokens already checked: token → (process, expiry), so a call costs a lookup.
    verified: RwLock<HashMap<String, (String, u64)>>,
    topology: Arc<TopologyConfig>,
    /// The requests each module sends (`Module::calls`), by module.
    calls: BTreeMap<&'static str, &'static [&'static str]>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Identity {
    /// This process's identity: the configured key, or — listening on loopback only — the
    /// development key kept in `state_dir`. The error names the key at fault.
    pub fn load(
        topology: Arc<TopologyConfig>,
        calls: BTreeMap<&'static str, &'static [&'static str]>,
        state_dir: &Path,
        exposed: Option<std::net::SocketAddr>,
    ) -> Result<Self, (String, String)> {
        let process = topology.process.clone();
        let ids = &topology.identity;
        let (seed, dir) = match &ids.key {
            Some(key) => (
                seed_of(key).map_err(|r| ("topology.identity.key".to_owned(), r))?,
                None,
            ),
            None => {
                if let Some(addr) = exposed {
                    return Err((
                        "topology.identity.key".to_owned(),
                        format!(
                            "must be set (see `banyan identity new`) to listen on {addr}, which \
                             is not a loopback address; a generated development identity is used \
                             on loopback only"
                        ),
                    ));
                }
                let dir = state_dir.join("identity");
                let seed = development_seed(&dir, &process).map_err(|e| {
                    (
                        "topology.identity.key".to_owned(),
                        format!(
                            "is not set, and no development key could be kept in {}: {e}",
                            dir.display()
                        ),
                    )
                })?;
                (seed, Some(dir))
            }
        };
        let mut configured = BTreeMap::new();
        for (name, key) in &ids.public_keys {
            let key = public_key_of(key)
                .map_err(|r| (format!("topology.identity.public_keys.{name}"), r))?;
            configured.insert(name.clone(), key);
        }
        if dir.is_none() {
            for name in topology.processes() {
                if !configured.contains_key(name) {
                    return Err((
                        format!("topology.identity.public_keys.{name}"),
                        "must be set: every process of the topology needs its public key".into(),
                    ));
                }
            }
        }
        let identity = Self {
            process,
            encoding: encoding_key(&seed),
            current: RwLock::new((HeaderValue::from_static(""), 0)),
            configured,
            dir,
            found: RwLock::default(),
            verified: RwLock::default(),
            topology,
            calls,
        };
        identity
            .sign()
            .map_err(|e| ("topology.identity.key".to_owned(), e))?;
        Ok(identity)
    }

    /// Signs a fresh token and keeps it as the current credential.
    fn sign(&self) -> Result<HeaderValue, String> {
        let now = now_secs();
        let token = signed_token(&self.process, &self.encoding, now)
            .map_err(|e| format!("cannot sign with it: {e}"))?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            (value.clone(), now + TOKEN_LIFETIME.as_secs() / 2);
        Ok(value)
    }

    fn key_of(&self, process: &str) -> Option<DecodingKey> {
        if let Some(key) = self.configured.get(process) {
            return Some(key.clone());
        }
        let dir = self.dir.as_ref()?;
        if let Some(key) = self
            .found
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(process)
        {
            return Some(key.clone());
        }
        // Development: a process started later wrote its public key there meanwhile.
        let text = std::fs::read_to_string(dir.join(format!("{process}.pub"))).ok()?;
        let key = public_key_of(&text).ok()?;
        self.found
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(process.to_owned(), key.clone());
        Some(key)
    }
}

/// The development seed of `process` in `dir`, made once; its public key written beside it.
fn development_seed(dir: &Path, process: &str) -> std::io::Result<[u8; 32]> {
    let text = crate::secrets::generated_with(dir, &format!("{process}.key"), || new_key_pair().0)?;
    let seed =
        seed_of(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let public = STANDARD.encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
    let path = dir.join(format!("{process}.pub"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(public.as_str()) {
        let draft = dir.join(format!(".{process}.pub.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&draft, &public)?;
        std::fs::rename(&draft, &path)?;
    }
    Ok(seed)
}

impl Peers for Identity {
    fn credential(&self) -> HeaderValue {
        let (value, renew_at) = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if now_secs() < renew_at {
            return value;
        }
        self.sign().unwrap_or(value)
    }

    fn authenticate(&self, token: &str) -> Result<String, String> {
        let now = now_secs();
        if let Some((process, exp)) = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            && now < *exp
        {
            return Ok(process.clone());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "not a process token")?;
        let process = header
            .kid
            .ok_or("a process token names its process (kid)")?;
        if !self.topology.processes().contains(&process.as_str()) {
            return Err(format!("no process `{process}` in this topology"));
        }
        let key = self
            .key_of(&process)
            .ok_or_else(|| format!("no public key known for process `{process}`"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[process.as_str()]);
        validation.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| format!("the token of process `{process}` is not accepted: {e}"))?;
        if data.claims.iat > now + validation.leeway
            || data.claims.exp > data.claims.iat + TOKEN_LIFETIME.as_secs()
        {
            return Err(format!(
                "the token of process `{process}` claims too much time"
            ));
        }
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() > 1024 {
            verified.retain(|_, (_, exp)| now < *exp);
        }
        verified.insert(token.to_owned(), (process.clone(), data.claims.exp));
        Ok(process)
    }

    /// Events only from the process the topology places their module in; requests only from
    /// a process hosting a module that declares it sends them (`Module::calls`).
    fn permits(&self, peer: &str, kind: MessageKind, subject: &str) -> bool {
        match kind {
            MessageKind::Request => self.calls.iter().any(|(module, calls)| {
                self.topology.process_of(module) == peer && calls.contains(&subject)
            }),
            MessageKind::Event => {
                let module = subject.split('.').next().unwrap_or_default();
                self.topology.process_of(module) == peer
            }
        }
    }
}

/// A token that `process` would present, signed with its development key in `state_dir`: for
/// tests that act as one process of a cluster.
pub fn development_credential(state_dir: &Path, process: &str) -> anyhow::Result<String> {
    let seed = development_seed(&state_dir.join("identity"), process)?;
    Ok(signed_token(process, &encoding_key(&seed), now_secs())?)
}

/// The key the JWT library signs with, from an Ed25519 seed.
fn encoding_key(seed: &[u8; 32]) -> EncodingKey {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    EncodingKey::from_ed_der(&der)
}

/// A token naming `process` (`kid` and `iss`), issued `now` for [`TOKEN_LIFETIME`].
fn signed_token(
    process: &str,
    key: &EncodingKey,
    now: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        iss: process.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + TOKEN_LIFETIME.as_secs(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(process.to_owned());
    jsonwebtoken::encode(&header, &claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Placement, TransportKind};

    fn topology(process: &str, keys: &BTreeMap<String, String>, key: &str) -> Arc<TopologyConfig> {
        let mut topology = TopologyConfig::default();
        topology.modules.insert(
            "payments".into(),
            Placement {
                process: "payments".into(),
                transport: TransportKind::Http,
                balance: Default::default(),
            },
        );
        topology.process = process.into();
        topology.identity = IdentityConfig {
            key: Some(key.into()),
            public_keys: keys.clone(),
        };
        Arc::new(topology)
    }

    /// Orders (in main) asks payments nothing; payments asks orders for orders.
    fn calls() -> BTreeMap<&'static str, &'static [&'static str]> {
        [
            ("orders", &[][..]),
            ("payments", &["orders.get_order.v1"][..]),
        ]
        .into()
    }

    #[test]
    fn a_process_is_known_by_its_own_key_and_speaks_for_its_own_modules_only() {
        let (main_key, main_public) = new_key_pair();
        let (payments_key, payments_public) = new_key_pair();
        let (rogue_key, _) = new_key_pair();
        let keys: BTreeMap<String, String> = [
            ("main".into(), main_public),
            ("payments".into(), payments_public),
        ]
        .into();
        let dir = tempfile::tempdir().unwrap();
        let main = Identity::load(
            topology("main", &keys, &main_key),
            calls(),
            dir.path(),
            None,
        )
        .unwrap();
        let payments = Identity::load(
            topology("payments", &keys, &payments_key),
            calls(),
            dir.path(),
            None,
        )
        .unwrap();
        let token = |identity: &Identity| {
            identity.credential().to_str().unwrap()["Bearer ".len()..].to_owned()
        };
        assert_eq!(main.authenticate(&token(&payments)).unwrap(), "payments");
        assert_eq!(payments.authenticate(&token(&main)).unwrap(), "main");
        // Cached: the same answer again.
        assert_eq!(main.authenticate(&token(&payments)).unwrap(), "payments");

        // Another key claiming to be payments is refused.
        let rogue = Identity::load(
            topology("payments", &keys, &rogue_key),
            calls(),
            dir.path(),
            None,
        )
        .unwrap();
        assert!(main.authenticate(&token(&rogue)).is_err());
        assert!(main.authenticate("garbage").is_err());

        assert!(main.permits(
            "payments",
            MessageKind::Event,
            "payments.payment_completed.v1"
        ));
        assert!(!main.permits("payments", MessageKind::Event, "orders.order_confirmed.v1"));
        assert!(payments.permits("main", MessageKind::Event, "orders.order_placed.v1"));
        assert!(main.permits("payments", MessageKind::Request, "orders.get_order.v1"));
        assert!(!main.permits("payments", MessageKind::Request, "users.get_user.v1"));
        assert!(!payments.permits("main", MessageKind::Request, "orders.get_order.v1"));
    }

    #[test]
    fn beyond_loopback_every_key_is_needed_and_named() {
        let (key, public) = new_key_pair();
        let keys: BTreeMap<String, String> = [("main".into(), public)].into();
        let dir = tempfile::tempdir().unwrap();
        let mut config = (*topology("main", &keys, &key)).clone();
        let error =
            Identity::load(Arc::new(config.clone()), calls(), dir.path(), None).unwrap_err();
        assert_eq!(error.0, "topology.identity.public_keys.payments");
        config.identity.key = None;
        let exposed = Some("0.0.0.0:80".parse().unwrap());
        let error = Identity::load(Arc::new(config), calls(), dir.path(), exposed).unwrap_err();
        assert_eq!(error.0, "topology.identity.key");
    }
}
