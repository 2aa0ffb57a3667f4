//! What `users` does with accounts: register, change and delete them, each in one unit of
//! work with the event it announces.

use std::time::Duration;

use banyan_bus::{Context, Outbox, UnitOfWork};
use banyan_kit::auth::Role;
use banyan_users_contract::{TokensRevoked, UserId, UserRegistered};
use uuid::Uuid;

use crate::{
    model::{Email, Error, NewAccount, Password, Username},
    store::{self, UserRow},
};

/// Failed logins, counted per account and per client address: past a limit, logins of that
/// account (or from that address) are refused with a 429 before any password is checked,
/// until `window` has passed since the last failure.
///
/// The account is counted by the name that was tried, whether or not an account has it, so
/// the 429 comes after the same number of failures for a real account and an invented one
/// and says nothing of which accounts exist. A success clears the account's count; an
/// address's count only ages out (one client trying many accounts is what it is for).
#[derive(Debug, Clone)]
pub(crate) struct FailedLogins {
    by_account: moka::sync::Cache<String, Failures>,
    by_address: moka::sync::Cache<std::net::IpAddr, Failures>,
    limits: LoginLimits,
}

/// `[modules.users.login_limit]`.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LoginLimits {
    /// Failures of one account (by the name tried) before it is refused for a while.
    pub(crate) per_account: u32,
    /// Failures from one client address, whatever the accounts.
    pub(crate) per_address: u32,
    /// How long after the last failure the count is forgotten.
    pub(crate) window_secs: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_address: 20,
            window_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: std::time::Instant,
}

impl FailedLogins {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        let window = Duration::from_secs(limits.window_secs);
        // Bounded: a flood of invented names or addresses evicts old entries, it never grows
        // the process without end.
        Self {
            by_account: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            by_address: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            limits,
        }
    }

    /// `Err(seconds)` to wait when the account or the address is over its limit.
    pub(crate) fn check(&self, login: &str, address: Option<std::net::IpAddr>) -> Result<(), u64> {
        let window = Duration::from_secs(self.limits.window_secs);
        let wait = |failures: Option<Failures>, limit: u32| {
            failures
                .filter(|f| f.count >= limit)
                .map(|f| window.saturating_sub(f.last.elapsed()).as_secs().max(1))
        };
        let account = wait(self.by_account.get(&key(login)), self.limits.per_account);
        let address =
            address.and_then(|ip| wait(self.by_address.get(&ip), self.limits.per_address));
        match account.max(address) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    pub(crate) fn failed(&self, login: &str, address: Option<std::net::IpAddr>) {
        let bump = |old: Option<Failures>| Failures {
            count: old.map_or(0, |f| f.count).saturating_add(1),
            last: std::time::Instant::now(),
        };
        self.by_account
            .entry(key(login))
            .and_upsert_with(|old| bump(old.map(|e| *e.value())));
        if let Some(ip) = address {
            self.by_address
                .entry(ip)
                .and_upsert_with(|old| bump(old.map(|e| *e.value())));
        }
    }

    pub(crate) fn succeeded(&self, login: &str) {
        self.by_account.invalidate(&key(login));
    }
}

/// Logins are by username or email, compared without case.
fn key(login: &str) -> String {
    login.trim().to_lowercase()
}

/// The module's password hashing: a few threads of its own, at most one hash each at a time.
///
/// Argon2id takes tens of milliseconds and 19 MiB per hash, and anyone may send logins. On
/// tokio's blocking pool every concurrent login got a thread, and each thread's allocator
/// arena kept its 19 MiB afterwards: 32 logins in flight grew the process past 6 GB. Here at
/// most `threads` hashes run, so their memory is bounded and reused; callers beyond them wait
/// at most `wait` for a thread and then get [`Error::Busy`] (a fast 503 with `Retry-After`).
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    jobs: async_channel::Sender<Job>,
    wait: Duration,
}

type Job = Box<dyn FnOnce() + Send>;

impl Hasher {
    /// `threads` hashing threads; a caller waits at most `wait` for one. The threads end when
    /// the last handle is dropped.
    pub(crate) fn new(threads: usize, wait: Duration) -> std::io::Result<Self> {
        // No queue beyond the threads themselves: a waiting caller waits in `send`, bounded.
        let (jobs, queue) = async_channel::bounded::<Job>(1);
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("users-hash-{n}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv_blocking() {
                        job();
                    }
                })?;
        }
        Ok(Self { jobs, wait })
    }

    /// Runs `work` on a hashing thread, or `Busy` if none takes it within the wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        match tokio::time::timeout(self.wait, self.jobs.send(job)).await {
            Ok(Ok(())) => answer
                .await
                .map_err(|_| Error::Unexpected("a hashing thread ended".into())),
            Ok(Err(_)) => Err(Error::Unexpected("the hashing threads ended".into())),
            Err(_) => Err(Error::Busy),
        }
    }

    /// The argon2id hash of `password`.
    pub(crate) async fn hash(&self, password: Password) -> Result<String, Error> {
        self.run(move || password.hash_blocking()).await?
    }

    /// Whether `password` matches `stored` (see [`Password::verify_blocking`]).
    pub(crate) async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        self.run(move || password.verify_blocking(stored.as_deref()))
            .await
    }
}

/// Creates an account and announces it, in one transaction.
pub(crate) async fn register(
    outbox: &Outbox,
    hasher: &Hasher,
    cx: &Context,
    account: NewAccount,
    role: Role,
) -> Result<UserRow, Error> {
    let username = Username::parse(&account.username)?;
    let email = Email::parse(&account.email)?;
    let hash = hasher.hash(Password::parse(account.password)?).await?;
    let mut uow = outbox.begin().await?;
    if let Some(field) = store::taken(&mut uow, &username, &email, None).await? {
        return Err(Error::Taken(field));
    }
    let user = store::insert(&mut uow, &username, &email, &hash, role)
        .await
        .map_err(Error::taken_or_storage)?;
    uow.emit(
        cx,
        UserRegistered {
            user_id: UserId(user.id()),
            username: user.username.clone(),
            email: user.email.clone(),
        },
    )
    .await?;
    uow.commit().await.map_err(Error::taken_or_storage)?;
    tracing::info!(user_id = %user.id, role = %user.role, "Account registered.");
    Ok(user)
}

/// Creates the configured admin unless an account with its username exists. One that exists
/// is never changed; if the configured password no longer opens it, the operator is told.
/// Processes of `users` starting together (several mains) may race to create it: the one
/// that loses finds it made.
pub(crate) async fn ensure_admin(
    outbox: &Outbox,
    hasher: &Hasher,
    cx: &Context,
    admin: NewAccount,
) -> anyhow::Result<()> {
    // Worded as every other configuration error is.
    const KEY: &str = "modules.users.bootstrap_admin";
    let invalid = |e: &dyn std::fmt::Display| anyhow::anyhow!("invalid value for `{KEY}`: {e}");
    let username = Username::parse(&admin.username).map_err(|e| invalid(&e))?;
    if store::find_by_login(outbox.db(), username.as_str())
        .await?
        .is_none()
    {
        match register(outbox, hasher, cx, admin.clone(), Role::Admin).await {
            Ok(_) => {
                tracing::info!(username = username.as_str(), "Bootstrap admin created.");
                return Ok(());
            }
            // Another process of this module (a second main started at the same moment)
            // created it first: it exists now, and is checked as any existing one.
            Err(Error::Taken(_)) => {}
            Err(other) => return Err(invalid(&other)),
        }
    }
    let Some(existing) = store::find_by_login(outbox.db(), username.as_str()).await? else {
        return Err(invalid(&"its email belongs to another account"));
    };
    let password = Password::parse(admin.password).map_err(|e| invalid(&e))?;
    if !hasher
        .verify(password, Some(existing.password_hash))
        .await
        .map_err(|e| invalid(&e))?
    {
        tracing::warn!(
            username = username.as_str(),
            "The bootstrap admin exists with another password than {KEY}.password: the \
             account is left as it is (change its password through the API)."
        );
    }
    Ok(())
}

/// What an account's owner or an admin asks to change.
#[derive(Debug)]
pub(crate) struct Changes {
    pub(crate) email: Option<String>,
    pub(crate) password: Option<Password>,
    /// Needed when the owner changes their own password: a stolen token alone cannot take
    /// the account over.
    pub(crate) current_password: Option<Password>,
}

/// Changes an account's email, password, or both (at least one is given). `by_owner`: the
/// caller is the account's owner, who must give the current password to change it.
pub(crate) async fn change(
    outbox: &Outbox,
    hasher: &Hasher,
    cx: &Context,
    id: Uuid,
    by_owner: bool,
    changes: Changes,
) -> Result<UserRow, Error> {
    let Changes {
        email,
        password,
        current_password,
    } = changes;
    if email.is_none() && password.is_none() {
        return Err(banyan_kit::Invalid::new("body", "give an email, a password, or both").into());
    }
    if password.is_some() && by_owner {
        let current = current_password.ok_or(Error::CurrentPasswordNeeded)?;
        let stored = store::find(outbox.db(), id)
            .await?
            .map(|user| user.password_hash);
        if !hasher.verify(current, stored).await? {
            return Err(Error::WrongPassword);
        }
    }
    let email = email.as_deref();
    let email = email.map(Email::parse).transpose()?;
    let hash = match password {
        Some(password) => Some(hasher.hash(Password::parse(password)?).await?),
        None => None,
    };
    let mut uow = outbox.begin().await?;
    if let Some(email) = &email
        && store::email_taken(&mut uow, email, id).await?
    {
        return Err(Error::Taken("email"));
    }
    let user = store::update(&mut uow, id, email.as_ref(), hash.as_deref())
        .await
        .map_err(Error::taken_or_storage)?
        .ok_or(Error::NotFound(id))?;
    if hash.is_some() {
        revoke_tokens(&mut uow, cx, id, "password_changed").await?;
    }
    uow.commit().await.map_err(Error::taken_or_storage)?;
    Ok(user)
}

/// Deletes an account; never the last admin.
pub(crate) async fn delete(outbox: &Outbox, cx: &Context, id: Uuid) -> Result<(), Error> {
    let mut uow = outbox.begin().await?;
    let (role, admins) = store::role_and_admins(&mut uow, id).await?;
    if role.as_deref() == Some(Role::Admin.as_str()) && admins <= 1 {
        return Err(Error::LastAdmin);
    }
    if !store::delete(&mut uow, id).await? {
        return Err(Error::NotFound(id));
    }
    revoke_tokens(&mut uow, cx, id, "deleted").await?;
    uow.commit().await?;
    tracing::info!(user_id = %id, "Account deleted.");
    Ok(())
}

/// Announces, in the unit of work, that every token of `id` issued until now stops working.
async fn revoke_tokens(
    uow: &mut UnitOfWork,
    cx: &Context,
    id: Uuid,
    reason: &str,
) -> Result<(), Error> {
    let revoked = TokensRevoked {
        user_id: UserId(id),
        not_before_ms: banyan_db::now_millis(),
        reason: reason.to_owned(),
    };
    uow.emit(cx, revoked).await?;
    Ok(())
}

/// The account `id`.
pub(crate) async fn find(outbox: &Outbox, id: Uuid) -> Result<UserRow, Error> {
    store::find(outbox.db(), id)
        .await?
        .ok_or(Error::NotFound(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_beyond_the_hashing_threads_is_told_busy_not_queued_forever() {
        let hasher = Hasher::new(1, Duration::from_millis(50)).unwrap();
        let password = || Password::parse_test("correct horse battery");
        let (release, hold) = std::sync::mpsc::channel::<()>();
        // The one thread is taken...
        let held = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move || hold.recv().ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ...and the one place in front of it too.
        let queued = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(password()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = hasher.hash(password()).await;
        assert!(matches!(refused, Err(Error::Busy)), "{refused:?}");
        release.send(()).unwrap();
        assert!(held.await.unwrap().is_ok());
        let hash = queued.await.unwrap().unwrap();
        assert!(hasher.verify(password(), Some(hash)).await.unwrap());
    }
}
