//! What `notifications` answers on the bus, and what it listens to.

use std::sync::Arc;

use banyan_bus::{Context, Delivered, Event, HandlerError, ModuleBus, Rejection};
use banyan_notifications_contract::{ListNotifications, NotificationView, UserId};
use banyan_orders_contract::{OrderCancelled, OrderConfirmed};
use banyan_users_contract::{GetUser, UserRegistered};

use crate::{
    State, domain,
    model::{Error, Limit, Notice, Recipient},
    store,
};

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::Storage(error) => Rejection::internal(error),
        }
    }
}

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, list_notifications);
    bus.subscribe(state, on_user_registered);
    bus.subscribe(state, on_order_confirmed);
    bus.subscribe(state, on_order_cancelled);
}

async fn list_notifications(
    state: Arc<State>,
    _cx: Context,
    request: ListNotifications,
) -> Result<Vec<NotificationView>, Rejection> {
    let limit = Limit::parse(request.limit).map_err(Error::from)?;
    let rows = store::list(state.outbox.db(), request.user_id.0, limit.get(), 0)
        .await
        .map_err(Error::from)?;
    Ok(rows
        .into_iter()
        .map(|row| NotificationView {
            notification_id: row.id(),
            user_id: UserId(row.user_id()),
            source_message_id: row.source_message_id(),
            sent_at_ms: row.sent_at,
            kind: row.kind,
            subject: row.subject,
            body: row.body,
        })
        .collect())
}

/// Records the new account's address and welcomes them.
async fn on_user_registered(
    state: Arc<State>,
    delivered: Delivered<UserRegistered>,
) -> Result<(), HandlerError> {
    let recipient = Recipient {
        user_id: delivered.user_id.0,
        email: delivered.email.clone(),
        username: delivered.username.clone(),
    };
    let notice = Notice::welcome(&recipient.username);
    notify(&state, &delivered, &recipient, true, notice).await
}

async fn on_order_confirmed(
    state: Arc<State>,
    delivered: Delivered<OrderConfirmed>,
) -> Result<(), HandlerError> {
    let (recipient, known) = recipient(&state, delivered.context(), delivered.user_id).await?;
    let notice = Notice::order_confirmed(delivered.order_id.0, delivered.total);
    notify(&state, &delivered, &recipient, !known, notice).await
}

async fn on_order_cancelled(
    state: Arc<State>,
    delivered: Delivered<OrderCancelled>,
) -> Result<(), HandlerError> {
    let (recipient, known) = recipient(&state, delivered.context(), delivered.user_id).await?;
    let notice = Notice::order_cancelled(delivered.order_id.0, &delivered.reason);
    notify(&state, &delivered, &recipient, !known, notice).await
}

/// Sends `notice` because of `delivered`, once: the recipient is known before the unit of work
/// opens (no write lock is held while users answers), and the notification is logged as sent
/// only once its row is committed.
async fn notify<E: Event>(
    state: &State,
    delivered: &Delivered<E>,
    recipient: &Recipient,
    remember: bool,
    notice: Notice,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(delivered).await? else {
        return Ok(());
    };
    let sent = domain::send(&mut uow, &delivered.envelope, recipient, remember, &notice).await?;
    uow.commit().await?;
    if sent {
        domain::log_sent(recipient, &notice);
    }
    Ok(())
}

/// Whom to write to about `user_id`, and whether this module knew them already. A user whose
/// registration has not reached this module yet is asked of users; if that fails the event is
/// retried (with backoff, then dead-lettered), since no notification can go out without an
/// address.
async fn recipient(
    state: &State,
    cx: &Context,
    user_id: UserId,
) -> Result<(Recipient, bool), HandlerError> {
    if let Some(known) = store::find_recipient(state.outbox.db(), user_id.0).await? {
        return Ok((
            Recipient {
                user_id: user_id.0,
                email: known.email,
                username: known.username,
            },
            true,
        ));
    }
    // The bus logs the failure with each retry.
    let profile = state.bus.request(cx, GetUser { user_id }).await?;
    Ok((
        Recipient {
            user_id: user_id.0,
            email: profile.email,
            username: profile.username,
        },
        false,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use banyan_bus::{BusConfig, Envelope, Event, Message};
    use banyan_message::{Currency, Money};
    use banyan_orders_contract::OrderId;
    use banyan_users_contract::UserProfile;

    use super::*;
    use crate::test_support::{self, TestDb};

    /// A notifications database with the module's handlers on its bus, retrying quickly, and a
    /// stand-in users module that knows `known` and counts the questions it is asked.
    pub(crate) async fn started(
        known: Option<UserProfile>,
    ) -> (TestDb, Arc<State>, Arc<AtomicUsize>) {
        let db = test_support::open_with(BusConfig {
            max_attempts: 2,
            backoff_base_ms: 1,
            backoff_max_ms: 2,
            ..BusConfig::default()
        })
        .await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            bus: db.module_bus(),
        });
        register(&db.module_bus(), &state);
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        db.bus
            .handle::<GetUser, _, _>("users", move |_cx, request| {
                counter.fetch_add(1, Ordering::SeqCst);
                let known = known.clone();
                async move {
                    known
                        .filter(|profile| profile.user_id == request.user_id)
                        .ok_or_else(|| Rejection::not_found("user", request.user_id))
                }
            });
        (db, state, asked)
    }

    /// Delivers `event` as the bus would, with the given envelope (a fresh one if `None`).
    pub(crate) async fn deliver<E: Event>(db: &TestDb, event: &E, envelope: Option<&Envelope>) {
        let envelope = envelope
            .cloned()
            .unwrap_or_else(|| Context::root().envelope(E::SUBJECT));
        let json = serde_json::to_string(event).unwrap();
        db.bus
            .inbound("nats")
            .deliver_remote_event(envelope, json.into(), event.aggregate_id())
            .await
            .unwrap();
    }

    pub(crate) fn registered(user: UserId, name: &str) -> UserRegistered {
        UserRegistered {
            user_id: user,
            username: name.into(),
            email: format!("{name}@example.com"),
        }
    }

    async fn listed(db: &TestDb, user: UserId, limit: u32) -> Vec<NotificationView> {
        db.bus
            .request(
                &Context::root(),
                ListNotifications {
                    user_id: user,
                    limit,
                },
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_event_sends_one_notification_however_often_it_arrives() {
        let (db, _, asked) = started(None).await;
        let user = UserId::new();
        let welcome = Context::root().envelope(UserRegistered::SUBJECT);
        deliver(&db, &registered(user, "alice"), Some(&welcome)).await;
        deliver(&db, &registered(user, "alice"), Some(&welcome)).await;
        let order = OrderId::new();
        let confirmed = OrderConfirmed {
            order_id: order,
            user_id: user,
            total: Money::new(1234, Currency::EUR),
        };
        let envelope = Context::root().envelope(OrderConfirmed::SUBJECT);
        deliver(&db, &confirmed, Some(&envelope)).await;
        deliver(&db, &confirmed, Some(&envelope)).await;
        let cancelled = OrderCancelled {
            order_id: OrderId::new(),
            user_id: user,
            reason: "out_of_stock".into(),
        };
        deliver(&db, &cancelled, None).await;
        let sent = listed(&db, user, 100).await;
        let kinds: Vec<&str> = sent.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, vec!["order_cancelled", "order_confirmed", "welcome"]);
        assert!(sent[0].body.contains("out_of_stock"));
        assert!(sent[1].body.contains(&order.to_string()));
        assert!(sent[1].body.contains("12.34 EUR"));
        assert_eq!(sent[1].source_message_id, envelope.message_id);
        assert_eq!(sent[2].source_message_id, welcome.message_id);
        assert_eq!(asked.load(Ordering::SeqCst), 0, "alice was known");
        assert_eq!(listed(&db, user, 1).await.len(), 1);
        assert!(listed(&db, UserId::new(), 10).await.is_empty());
    }

    #[tokio::test]
    async fn an_order_event_before_the_registration_asks_users_for_the_address_once() {
        let user = UserId::new();
        let profile = UserProfile {
            user_id: user,
            username: "bob".into(),
            email: "bob@example.com".into(),
            role: "customer".into(),
        };
        let (db, _, asked) = started(Some(profile)).await;
        let confirmed = |order| OrderConfirmed {
            order_id: order,
            user_id: user,
            total: Money::new(500, Currency::EUR),
        };
        deliver(&db, &confirmed(OrderId::new()), None).await;
        deliver(&db, &confirmed(OrderId::new()), None).await;
        assert_eq!(asked.load(Ordering::SeqCst), 1, "the address is remembered");
        // The registration arriving late still welcomes them.
        deliver(&db, &registered(user, "bob"), None).await;
        let kinds: Vec<String> = listed(&db, user, 10)
            .await
            .into_iter()
            .map(|n| n.kind)
            .collect();
        assert_eq!(kinds, vec!["welcome", "order_confirmed", "order_confirmed"]);
    }

    #[tokio::test]
    async fn an_order_event_for_a_user_nobody_knows_is_retried_and_sends_nothing() {
        let (db, _, asked) = started(None).await;
        let user = UserId::new();
        let cancelled = OrderCancelled {
            order_id: OrderId::new(),
            user_id: user,
            reason: "payment_declined".into(),
        };
        deliver(&db, &cancelled, None).await;
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked on every attempt");
        assert!(listed(&db, user, 10).await.is_empty());
        let letters: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(db.outbox.db().reader())
            .await
            .unwrap();
        assert_eq!(letters.0, 1, "the event waits in the dead letters");
    }

    #[tokio::test]
    async fn a_listing_asks_for_one_to_a_hundred_notifications() {
        let (db, _, _) = started(None).await;
        for limit in [0, 101] {
            let Err(error) = db
                .bus
                .request(
                    &Context::root(),
                    ListNotifications {
                        user_id: UserId::new(),
                        limit,
                    },
                )
                .await
            else {
                panic!("limit {limit} must be rejected");
            };
            assert_eq!(error.rejection().unwrap().code, "validation_failed");
        }
    }
}
