//! What `users` does with accounts: register, change and delete them, each in one unit of
//! work with the event it announces.

use banyan_bus::{Context, Outbox};
use banyan_kit::auth::Role;
use banyan_users_contract::{UserId, UserRegistered};
use uuid::Uuid;

use crate::{
    model::{Email, Error, NewAccount, Password, Username},
    store::{self, UserRow},
};

/// Creates an account and announces it, in one transaction.
pub(crate) async fn register(
    outbox: &Outbox,
    cx: &Context,
    account: NewAccount,
    role: Role,
) -> Result<UserRow, Error> {
    let username = Username::parse(&account.username)?;
    let email = Email::parse(&account.email)?;
    let hash = Password::parse(account.password)?.hash().await?;
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

/// Creates the configured admin unless an account with its username exists.
pub(crate) async fn ensure_admin(
    outbox: &Outbox,
    cx: &Context,
    admin: NewAccount,
) -> anyhow::Result<()> {
    let username =
        Username::parse(&admin.username).map_err(|e| anyhow::anyhow!("bootstrap_admin: {e}"))?;
    if store::find_by_login(outbox.db(), username.as_str())
        .await?
        .is_some()
    {
        return Ok(());
    }
    register(outbox, cx, admin, Role::Admin)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap_admin: {e}"))?;
    tracing::info!(username = username.as_str(), "Bootstrap admin created.");
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
        let current = current_password.ok_or_else(|| {
            banyan_kit::Invalid::new("current_password", "needed to change the password")
        })?;
        let stored = store::find(outbox.db(), id)
            .await?
            .map(|user| user.password_hash);
        if !current.verify(stored).await {
            return Err(Error::WrongPassword);
        }
    }
    let email = email.as_deref();
    let email = email.map(Email::parse).transpose()?;
    let hash = match password {
        Some(password) => Some(Password::parse(password)?.hash().await?),
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
    uow.commit().await.map_err(Error::taken_or_storage)?;
    Ok(user)
}

/// Deletes an account; never the last admin.
pub(crate) async fn delete(outbox: &Outbox, id: Uuid) -> Result<(), Error> {
    let mut uow = outbox.begin().await?;
    let (role, admins) = store::role_and_admins(&mut uow, id).await?;
    if role.as_deref() == Some(Role::Admin.as_str()) && admins <= 1 {
        return Err(Error::LastAdmin);
    }
    if !store::delete(&mut uow, id).await? {
        return Err(Error::NotFound(id));
    }
    uow.commit().await?;
    tracing::info!(user_id = %id, "Account deleted.");
    Ok(())
}

/// The account `id`.
pub(crate) async fn find(outbox: &Outbox, id: Uuid) -> Result<UserRow, Error> {
    store::find(outbox.db(), id)
        .await?
        .ok_or(Error::NotFound(id))
}
