//! The values of `users` and the rules on them, and the module's error.

use std::cell::RefCell;

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use banyan_db::sqlx;
use banyan_kit::Invalid;
use serde::Deserialize;
use uuid::Uuid;

/// What can go wrong in `users`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Another account has that username or email.
    #[error("that {0} is already taken")]
    Taken(&'static str),
    #[error("user {0} does not exist")]
    NotFound(Uuid),
    /// The current password, asked to change the password, is not the account's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// The owner changed their password without giving the current one: the same refusal as a
    /// wrong one (a proof of who is asking is missing), not a malformed body.
    #[error("current_password: needed to change the password")]
    CurrentPasswordNeeded,
    /// Deleting this account would leave the shop without an admin.
    #[error("the last admin cannot be deleted")]
    LastAdmin,
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// Every hashing thread stayed busy for as long as a caller may wait.
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    #[error("{0}")]
    Unexpected(String),
}

impl Error {
    /// Two requests racing for one name both pass the check on PostgreSQL; the unique index
    /// stops the second, and that is still a conflict.
    pub(crate) fn taken_or_storage(error: sqlx::Error) -> Self {
        match error.as_database_error() {
            Some(db) if db.is_unique_violation() => Self::Taken("username or email"),
            _ => Self::Storage(error),
        }
    }
}

/// A username: 3 to 32 characters of `a-z 0-9 _ . -`, compared without case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Username(String);

impl Username {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim().to_lowercase();
        if !(3..=32).contains(&name.chars().count()) {
            return Err(Invalid::new("username", "must be 3 to 32 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Invalid::new(
                "username",
                "may hold only letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(name))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, stored in lower case. Checked for shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        let invalid = || Invalid::new("email", "must be an address like name@example.com");
        // Lengths in characters, as the document's `maxLength` counts them, and of the address
        // as given: lower-casing may lengthen some letters.
        if raw.chars().count() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let email = raw.to_lowercase();
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let local_length = raw
            .split_once('@')
            .map_or(0, |(local, _)| local.chars().count());
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@');
        if local.is_empty() || local_length > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in clear, on its way to being hashed. Its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// A password for tests, unchecked.
    #[cfg(test)]
    pub(crate) fn parse_test(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    pub(crate) fn parse(raw: Password) -> Result<Self, Invalid> {
        let length = raw.0.chars().count();
        if !(8..=128).contains(&length) {
            return Err(Invalid::new("password", "must be 8 to 128 characters"));
        }
        Ok(raw)
    }

    /// Hashes with argon2id (OWASP parameters, a random 16-byte salt) into a PHC string. It
    /// takes tens of milliseconds and 19 MiB: run it on the module's hashing threads
    /// (`domain::Hasher`), never an async one.
    pub(crate) fn hash_blocking(&self) -> Result<String, Error> {
        let unexpected = |e: &dyn std::fmt::Display| Error::Unexpected(e.to_string());
        let params = Params::default();
        let salt_bytes: [u8; 16] = rand::random();
        let salt = Salt::new(&salt_bytes).map_err(|e| unexpected(&e))?;
        let output = argon2id(&self.0, &salt, &params, Algorithm::Argon2id, Version::V0x13)?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| unexpected(&e))?,
            salt: Some(salt),
            hash: Some(output),
        };
        Ok(hash.to_string())
    }

    /// Checks against a stored hash. With no hash (unknown user) it checks against a dummy, so
    /// that the answer takes as long and says nothing about whether the user exists. Blocking,
    /// as [`hash_blocking`](Self::hash_blocking).
    pub(crate) fn verify_blocking(&self, stored: Option<&str>) -> bool {
        let Ok(parsed) = PasswordHash::new(stored.unwrap_or(DUMMY_HASH)) else {
            return false;
        };
        let (Ok(params), Ok(algorithm), Some(salt), Some(expected)) = (
            Params::try_from(&parsed),
            Algorithm::try_from(parsed.algorithm.as_str()),
            parsed.salt,
            parsed.hash,
        ) else {
            return false;
        };
        let version = parsed
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or_default();
        // `Output`'s equality is constant-time.
        argon2id(&self.0, &salt, &params, algorithm, version).is_ok_and(|output| output == expected)
            && stored.is_some()
    }
}

thread_local! {
    /// Argon2's working memory, one per hashing thread, kept between hashes. Allocated anew
    /// for each hash, the 19 MiB ended up retained by the allocator in every arena a thread
    /// happened to use, and a login flood grew the process by hundreds of MiB.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The argon2 hash of `password` with `salt` and `params`, in this thread's reused memory.
fn argon2id(
    password: &str,
    salt: &Salt,
    params: &Params,
    algorithm: Algorithm,
    version: Version,
) -> Result<Output, Error> {
    let unexpected = |e: &dyn std::fmt::Display| Error::Unexpected(e.to_string());
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    BLOCKS.with_borrow_mut(|blocks| {
        if blocks.len() != params.block_count() {
            *blocks = vec![Block::default(); params.block_count()];
        }
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, blocks)
            .map_err(|e| unexpected(&e))
    })?;
    Output::new(&out).map_err(|e| unexpected(&e))
}

/// The argon2id hash of a random string nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3GJAzv0J5dq0yrpGpx9YVNwGF7lFqU6hqsYz0wkuNUU";

/// A new account as a client asks for it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    /// 3 to 32 characters of `a-z 0-9 _ . -` (upper-case letters are taken as lower-case),
    /// compared without case.
    #[schema(min_length = 3, max_length = 32, pattern = r"^[A-Za-z0-9_.-]{3,32}$")]
    pub(crate) username: String,
    /// An address like `name@example.com`: a local part of 1 to 64 characters, `@`, and a
    /// domain with a dot inside; no spaces; at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^\s@\u0000-\u001F\u007F-\u009F]{1,64}@[^\s@.\u0000-\u001F\u007F-\u009F][^\s@\u0000-\u001F\u007F-\u009F]*\.[^\s@\u0000-\u001F\u007F-\u009F]*[^\s@.\u0000-\u001F\u007F-\u009F]$",
        example = "alice@example.com"
    )]
    pub(crate) email: String,
    /// 8 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 128)]
    pub(crate) password: Password,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_case_insensitive_and_limited_in_length_and_alphabet() {
        assert_eq!(Username::parse(" Alice ").unwrap().as_str(), "alice");
        assert!(Username::parse("al").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("alice<script>").is_err());
    }

    #[test]
    fn emails_must_have_a_local_part_and_a_dotted_domain() {
        assert_eq!(
            Email::parse("A@Example.COM").unwrap().as_str(),
            "a@example.com"
        );
        for bad in ["", "a", "a@", "@b.c", "a@b", "a@.b", "a b@c.d", "a@b@c.d"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_email_s_lengths_are_counted_in_characters_as_the_document_counts_them() {
        let local = "é".repeat(64);
        assert!(Email::parse(&format!("{local}@example.com")).is_ok());
        assert!(Email::parse(&format!("{local}é@example.com")).is_err());
        // 254 characters in all, and one more.
        let domain = format!("{}.com", "ü".repeat(248));
        assert!(Email::parse(&format!("a@{domain}")).is_ok());
        assert!(Email::parse(&format!("ab@{domain}")).is_err());
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let password = Password("hunter2hunter2".into());
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn hashes_are_standard_phc_strings_read_and_written_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};

        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(Password("correct horse".into()).verify_blocking(Some(&theirs)));
        assert!(!Password("wrong horse!".into()).verify_blocking(Some(&theirs)));
        let ours = Password("correct horse".into()).hash_blocking().unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse!", &parsed)
                .is_err()
        );
    }

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let hash = Password("correct horse".into()).hash_blocking().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(Password("correct horse".into()).verify_blocking(Some(&hash)));
        assert!(!Password("wrong horse!".into()).verify_blocking(Some(&hash)));
        assert!(!Password("correct horse".into()).verify_blocking(None));
    }
}
