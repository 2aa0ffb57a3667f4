//! Authentication: JWTs issued at login, checked on every protected route.
//!
//! The [`Authenticator`] is put into every request's extensions by the app, so that the
//! [`Caller`] extractor works in any module's router without the module holding the key.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::{
    ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use uuid::Uuid;

use crate::ApiError;

/// The name of the security scheme that operations needing a token name in the API document
/// (`security(("bearer" = []))`): an `Authorization: Bearer <JWT>` header.
pub const BEARER_SCHEME: &str = "bearer";

/// The security scheme [`BEARER_SCHEME`] names: HTTP bearer authentication with a JWT, as
/// [`Caller`] checks it.
pub fn bearer_security_scheme() -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A token from `POST /api/v1/users/login`, sent as `Authorization: Bearer <token>`.",
            ))
            .build(),
    )
}

/// What a user may do beyond their own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who issues Banyan's tokens, and for what: a token of another issuer or audience signed
/// with the same secret (another service sharing it by mistake) opens nothing here.
const ISSUER: &str = "banyan";
const AUDIENCE: &str = "banyan-api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    role: Role,
    iss: String,
    aud: String,
    iat: u64,
    /// `iat` in milliseconds, so that a token issued just after a revocation (a login right
    /// after a password change) is told from one issued just before it.
    #[serde(default)]
    iat_ms: u64,
    nbf: u64,
    exp: u64,
}

/// Issues and checks tokens (HS256 with the configured secret).
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Per account, the instant (ms) before which its tokens are refused: fed by
    /// `users.tokens_revoked.v1` in every process (see [`Authenticator::revoke`]).
    revoked: RwLock<HashMap<Uuid, u64>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// An issued token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// The JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl Authenticator {
    pub fn new(secret: &[u8], ttl: Duration) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["sub", "iss", "aud", "iat", "nbf", "exp"]);
        Arc::new(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            revoked: RwLock::default(),
        })
    }

    /// Refuses from now on every token of `user` issued before `not_before_ms`. Keeps the
    /// latest instant per account, and forgets those older than a token's lifetime (no token
    /// they could refuse is still valid), so the map stays as small as the recent revocations.
    pub fn revoke(&self, user: Uuid, not_before_ms: u64) {
        let now_ms = jsonwebtoken::get_current_timestamp() * 1000;
        let horizon = now_ms.saturating_sub(self.ttl.as_millis() as u64 + 60_000);
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, instant| *instant >= horizon);
        if not_before_ms >= horizon {
            let instant = revoked.entry(user).or_default();
            *instant = (*instant).max(not_before_ms);
        }
    }

    /// How long a token lives: a revocation older than that refuses nothing.
    pub fn token_lifetime(&self) -> Duration {
        self.ttl
    }

    /// How many accounts have revoked tokens that could still be presented.
    pub fn revocations(&self) -> usize {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn issue(&self, user: Uuid, role: Role) -> Result<Token, ApiError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let now = now_ms / 1000;
        let claims = Claims {
            sub: user,
            role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            iat_ms: now_ms,
            nbf: now,
            exp: now + self.ttl.as_secs(),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(ApiError::internal)?;
        Ok(Token {
            access_token,
            token_type: "Bearer",
            expires_in: self.ttl.as_secs(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::unauthorized("the token is invalid or expired");
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| invalid())?;
        // A token issued in the future was not issued by this clock.
        if data.claims.iat > jsonwebtoken::get_current_timestamp() + self.validation.leeway {
            return Err(invalid());
        }
        let issued_ms = match data.claims.iat_ms {
            0 => data.claims.iat * 1000,
            ms => ms,
        };
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if revoked
            .get(&data.claims.sub)
            .is_some_and(|not_before| issued_ms < *not_before)
        {
            return Err(ApiError::unauthorized(
                "the token was revoked (the account was deleted or its password changed)",
            ));
        }
        drop(revoked);
        Ok(Caller {
            user_id: data.claims.sub,
            role: data.claims.role,
        })
    }
}

/// The authenticated caller of a request. Extracting it requires a valid
/// `Authorization: Bearer <token>` header; without one the request is answered 401.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may act on `user`'s own data: it is theirs, or they are an admin.
    pub fn may_act_for(&self, user: Uuid) -> bool {
        self.user_id == user || self.is_admin()
    }

    /// Fails with 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Verified already by the app's edge, which refuses a request with a bad token.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let authenticator = parts
            .extensions
            .get::<Arc<Authenticator>>()
            .ok_or_else(|| ApiError::internal("no authenticator installed"))?;
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Err(ApiError::unauthorized(
                "this needs an Authorization: Bearer token",
            ));
        }
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
        authenticator.verify(token)
    }
}

/// A caller with the admin role. Extracted before the path and the body, so that a caller who
/// may not write is answered 401 or 403 whatever else the request holds.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the bus's reading of it, one for
/// the whole house), trimmed; `None` without one.
pub use banyan_bus::http::bearer_token;

#[cfg(test)]
mod tests {
    use super::*;

    /// A token signed with `secret` carrying `claims` as given.
    fn forged(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn a_token_not_yet_valid_issued_in_the_future_or_for_someone_else_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let auth = Authenticator::new(secret, Duration::from_secs(60));
        let now = jsonwebtoken::get_current_timestamp();
        let claims = |iat: u64, nbf: u64, iss: &str, aud: &str| {
            serde_json::json!({
                "sub": Uuid::now_v7(), "role": "admin", "iss": iss, "aud": aud,
                "iat": iat, "nbf": nbf, "exp": now + 600,
            })
        };
        assert!(
            auth.verify(&forged(secret, claims(now, now, ISSUER, AUDIENCE)))
                .is_ok()
        );
        for (what, bad) in [
            (
                "nbf in the future",
                claims(now, now + 600, ISSUER, AUDIENCE),
            ),
            (
                "iat in the future",
                claims(now + 600, now, ISSUER, AUDIENCE),
            ),
            ("another issuer", claims(now, now, "someone-else", AUDIENCE)),
            ("another audience", claims(now, now, ISSUER, "another-api")),
        ] {
            let error = auth.verify(&forged(secret, bad)).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::UNAUTHORIZED, "{what}");
        }
        let bare = serde_json::json!({ "sub": Uuid::now_v7(), "role": "admin", "exp": now + 600 });
        assert!(
            auth.verify(&forged(secret, bare)).is_err(),
            "claims missing"
        );
    }

    #[test]
    fn a_revoked_token_is_refused_and_one_issued_after_the_revocation_works() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
        let before = auth.issue(user, Role::Customer).unwrap().access_token;
        let others = auth.issue(other, Role::Customer).unwrap().access_token;
        std::thread::sleep(Duration::from_millis(2));
        let now_ms = jsonwebtoken::get_current_timestamp() * 1000;
        let revoked_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        auth.revoke(user, revoked_at);
        // An older revocation changes nothing; one past every token's life is forgotten.
        auth.revoke(user, revoked_at - 1);
        auth.revoke(Uuid::now_v7(), now_ms - 3_600_000);
        assert_eq!(auth.revocations(), 1);
        std::thread::sleep(Duration::from_millis(2));
        let after = auth.issue(user, Role::Customer).unwrap().access_token;
        let error = auth.verify(&before).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::UNAUTHORIZED);
        assert!(auth.verify(&after).is_ok(), "a login after the revocation");
        assert!(auth.verify(&others).is_ok(), "another account's token");
    }

    #[test]
    fn a_token_verifies_with_its_secret_and_not_with_another() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let user = Uuid::now_v7();
        let token = auth.issue(user, Role::Admin).unwrap();
        let caller = auth.verify(&token.access_token).unwrap();
        assert_eq!(caller.user_id, user);
        assert!(caller.is_admin());
        let other =
            Authenticator::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert!(other.verify(&token.access_token).is_err());
    }
}
