//! The secrets a process needs: the JWT signing key (and, through [`generated_with`], the
//! development identities of `crate::identity`). Either configured, or — for a development
//! run that listens on loopback only — generated once and kept in `server.state_dir`, so
//! `cargo run` needs no setup and every process of a split started from the same directory
//! shares them.
//!
//! Nothing shipped in a file opens anything: the defaults carry no secret, a secret Banyan
//! once published is refused, and a process listening beyond loopback starts only with
//! secrets of its own, at least 32 bytes each.

use std::{
    fs, io,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use rand::{Rng, distr::Alphanumeric};

/// The smallest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets that earlier versions shipped in `config/*.toml`: public, so never accepted.
pub const PUBLISHED: [&str; 2] = [
    "banyan-development-secret-change-me-0123456789",
    "banyan-development-bus-secret-change-me-0123456789",
];

/// Where a secret came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Configured,
    /// Generated for development and kept in the state directory.
    Generated,
}

/// Checks the configured secret in `slot`, or fills it with the one kept in `dir/file` —
/// unless the process listens at `exposed`, beyond loopback. The error is the reason.
pub fn fill(
    slot: &mut Option<String>,
    file: &str,
    dir: &Path,
    exposed: Option<&SocketAddr>,
) -> Result<Origin, String> {
    match slot {
        Some(secret) => {
            check(secret).map_err(str::to_owned)?;
            Ok(Origin::Configured)
        }
        None => {
            if let Some(addr) = exposed {
                return Err(format!(
                    "must be set to a secret of your own (at least {MIN_SECRET_BYTES} bytes) to \
                     listen on {addr}, which is not a loopback address; a generated development \
                     secret is used on loopback only"
                ));
            }
            let secret = generated(dir, file).map_err(|e| {
                format!(
                    "is not set, and no development secret could be kept in {}: {e}",
                    dir.display()
                )
            })?;
            *slot = Some(secret);
            Ok(Origin::Generated)
        }
    }
}

/// Why a configured secret cannot be used; the secret itself is never echoed.
pub fn check(secret: &str) -> Result<(), &'static str> {
    if secret.len() < MIN_SECRET_BYTES || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be at least 32 bytes of visible ASCII (no spaces)");
    }
    if PUBLISHED.contains(&secret) {
        return Err("is a development secret Banyan once published: set one of your own");
    }
    Ok(())
}

/// A random value kept in `dir/name`: read if it is there, else made once. Two processes
/// starting together agree on one: the first link wins, the other reads it.
pub fn generated(dir: &Path, name: &str) -> io::Result<String> {
    generated_with(dir, name, || {
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(48)
            .map(char::from)
            .collect()
    })
}

/// [`generated`], with the value made by `make` (at least 32 visible ASCII bytes).
pub fn generated_with(dir: &Path, name: &str, make: impl FnOnce() -> String) -> io::Result<String> {
    let path = dir.join(name);
    if let Some(secret) = read(&path)? {
        return Ok(secret);
    }
    fs::create_dir_all(dir)?;
    let secret = make();
    let draft = dir.join(format!(".{name}.{}.draft", uuid::Uuid::new_v4().simple()));
    write_private(&draft, &secret)?;
    let linked = fs::hard_link(&draft, &path);
    fs::remove_file(&draft)?;
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(&path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "an empty secret file")),
        Err(e) => Err(e),
    }
}

fn read(path: &PathBuf) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            if check(&secret).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a usable secret", path.display()),
                ));
            }
            Ok(Some(secret))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `text` readable by its owner only.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = generated(dir.path(), "jwt_secret").unwrap();
        assert!(check(&first).is_ok());
        assert_eq!(generated(dir.path(), "jwt_secret").unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("jwt_secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(generated(dir.path(), "bus_secret").unwrap(), first);
    }

    #[test]
    fn processes_starting_together_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| generated(dir.path(), "bus_secret").unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]), "{secrets:?}");
    }

    #[test]
    fn published_and_short_secrets_are_refused() {
        for secret in PUBLISHED {
            assert!(check(secret).is_err());
        }
        assert!(check("short").is_err());
        assert!(check("0123456789abcdef 0123456789abcdef").is_err());
        assert!(check("0123456789abcdef0123456789abcdef").is_ok());
    }
}
