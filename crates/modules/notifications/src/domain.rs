//! What `notifications` does: record a notification, once per event, and "send" it.

use banyan_bus::{Envelope, UnitOfWork};
use banyan_db::sqlx;

use crate::{
    model::{Notice, Recipient, notification_id},
    store,
};

/// Records `notice` to `recipient` because of the message `cause`, in the caller's unit of
/// work (which holds `cause`'s inbox entry): the message id is the notification's unique
/// source, so an event makes one notification however often it arrives. `remember` also
/// records the recipient (one this module did not know). Answers whether it is new.
///
/// "Sending" is the log line the caller writes after the commit ([`log_sent`]): the row is the
/// record of what was sent.
pub(crate) async fn send(
    uow: &mut UnitOfWork,
    cause: &Envelope,
    recipient: &Recipient,
    remember: bool,
    notice: &Notice,
) -> Result<bool, sqlx::Error> {
    if remember {
        store::add_recipient(uow, recipient).await?;
    }
    let kind = notice.kind.as_str();
    let sent = store::insert_notification(
        uow,
        notification_id(cause),
        recipient.user_id,
        kind,
        &notice.subject,
        &notice.body,
        cause.message_id,
    )
    .await?;
    Ok(sent)
}

/// The "email" of a notification, once its row is committed.
pub(crate) fn log_sent(recipient: &Recipient, notice: &Notice) {
    let email = &recipient.email;
    tracing::info!(to = %email, kind = notice.kind.as_str(), "Email sent.");
}
