//! Who may call this process's bus, and how this process proves itself to others.

use super::*;

/// What a call between processes hands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Event,
}

/// The processes' trust: the credential this process sends with every call, and the check of
/// a caller's. The application gives one per process (each process its own identity); a
/// [`SharedSecret`] serves where every caller is equally trusted (tests, benchmarks).
pub trait Peers: Send + Sync + fmt::Debug {
    /// The `authorization` value this process sends with every call it makes.
    fn credential(&self) -> HeaderValue;
    /// The process that presented `token`, or why it is refused (logged; never the token).
    fn authenticate(&self, token: &str) -> Result<String, String>;
    /// Whether process `peer` may hand in a `kind` on `subject`.
    fn permits(&self, peer: &str, kind: MessageKind, subject: &str) -> bool;
}

/// One secret every process holds: any holder may call and publish anything. For tests and
/// benchmarks; a topology gives each process its own identity instead.
pub struct SharedSecret {
    secret: Arc<str>,
    authorization: HeaderValue,
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSecret").finish_non_exhaustive()
    }
}

impl SharedSecret {
    /// Refuses an empty secret or one that cannot be a header.
    pub fn new(secret: &str) -> Result<Arc<Self>, HttpSetupError> {
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpSetupError::BadSecret);
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| HttpSetupError::BadSecret)?;
        authorization.set_sensitive(true);
        Ok(Arc::new(Self {
            secret: secret.into(),
            authorization,
        }))
    }
}

impl Peers for SharedSecret {
    fn credential(&self) -> HeaderValue {
        self.authorization.clone()
    }

    fn authenticate(&self, token: &str) -> Result<String, String> {
        if same_secret(token, &self.secret) {
            Ok("peer".to_owned())
        } else {
            Err("wrong shared secret".to_owned())
        }
    }

    fn permits(&self, _: &str, _: MessageKind, _: &str) -> bool {
        true
    }
}
