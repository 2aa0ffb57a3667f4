//! Read models that several instances of a module share: each instance keeps its own copy in
//! memory (a read costs no hop), and a change any instance commits is announced to all of
//! them over Redis pub/sub, so each forgets what it changed at once instead of when the
//! entry expires.
//!
//! `[modules.<name>.read_model]`: without `redis_url` a module's read model is in process
//! only, and a change another instance commits shows once the entry expires (its short time
//! to live). With it, the instance that commits a change publishes its id after the commit,
//! and every instance (itself too) forgets that entry when the message arrives: the staleness
//! across instances is Redis's delivery time. While an instance does not hear the channel
//! (Redis down, the connection broken) its entries live only the short time to live again,
//! and once it hears again it forgets everything first: what it missed cannot linger.
//! A change whose announcement could not be published (Redis unreachable from the writer
//! but not from a reader) shows at the latest when the reader's entry expires: `ttl_secs`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

/// `[modules.<name>.read_model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModelSettings {
    /// The Redis to announce changes on (`redis://host:port/`), for a module with several
    /// instances. Absent: the read model is this process's alone.
    pub redis_url: Option<String>,
    /// The pub/sub channel; `banyan.<module>.changed` when absent. Shops sharing a Redis
    /// should each have their own (an extra announcement only costs a re-read).
    pub channel: Option<String>,
    /// How long an entry lives while this instance hears the channel, 1 to 3600 s.
    pub ttl_secs: u64,
}

impl Default for ReadModelSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            channel: None,
            ttl_secs: 30,
        }
    }
}

impl ReadModelSettings {
    /// Checks the values, naming the first bad one.
    pub fn validate(&self, module: &str) -> anyhow::Result<()> {
        if !(1..=3600).contains(&self.ttl_secs) {
            anyhow::bail!("modules.{module}.read_model.ttl_secs must be 1 to 3600");
        }
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                anyhow::anyhow!("modules.{module}.read_model.redis_url is not a Redis URL: {e}")
            })?;
        }
        Ok(())
    }
}

/// What an instance hears on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Another instance (or this one) changed this entry.
    Changed(Uuid),
    /// The instance (re)joined the channel: it may have missed announcements.
    Rejoined,
}

/// One instance's end of the channel: announces its changes, and hands what it hears to the
/// read model. Cheap to clone.
#[derive(Clone)]
pub struct Announcements {
    channel: Arc<str>,
    /// The changes waiting to be announced, sent by one task in order. Bounded: while Redis
    /// is away the newest are dropped rather than piling up (the others then see those
    /// changes when their entries expire).
    outgoing: tokio::sync::mpsc::Sender<Uuid>,
    hearing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Announcements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcements")
            .field("channel", &self.channel)
            .field("hearing", &self.hearing())
            .finish_non_exhaustive()
    }
}

impl Announcements {
    /// Changes that may wait to be announced.
    const WAITING: usize = 4_096;
    /// How often the channel's connection is asked whether it is alive. A connection that
    /// died without a reset (a host gone, a network cut) is otherwise silent forever, and an
    /// instance would believe it hears while it hears nothing.
    const PROBE: Duration = Duration::from_secs(2);

    /// Joins `settings`' channel for `module` (none without `redis_url`), handing what it
    /// hears to `heard` from a task of its own that rejoins after every break. Never fails
    /// for Redis being away: until it is reached, the instance simply does not hear.
    pub fn join(
        settings: &ReadModelSettings,
        module: &str,
        heard: impl Fn(Heard) + Send + Sync + 'static,
    ) -> anyhow::Result<Option<Self>> {
        settings.validate(module)?;
        let Some(url) = &settings.redis_url else {
            return Ok(None);
        };
        let client = redis::Client::open(url.as_str())?;
        let channel: Arc<str> = settings
            .channel
            .clone()
            .unwrap_or_else(|| format!("banyan.{module}.changed"))
            .into();
        let (outgoing, waiting) = tokio::sync::mpsc::channel(Self::WAITING);
        let announcements = Self {
            channel: channel.clone(),
            outgoing,
            hearing: Arc::default(),
        };
        tokio::spawn(publish(client.clone(), channel, waiting));
        tokio::spawn(announcements.clone().listen(client, heard));
        Ok(Some(announcements))
    }

    /// Whether this instance hears the channel now.
    pub fn hearing(&self) -> bool {
        self.hearing.load(Ordering::Acquire)
    }

    /// Announces that entry `id` changed (call it once the change has committed). Queued for
    /// the announcing task: the caller never waits for Redis.
    pub fn announce(&self, id: Uuid) {
        if self.outgoing.try_send(id).is_err() {
            tracing::debug!(channel = %self.channel, entry = %id,
                "Too many announcements waiting for Redis; this one is dropped.");
        }
    }

    /// Hears the channel for as long as the process lives, rejoining after each break.
    async fn listen(self, client: redis::Client, heard: impl Fn(Heard)) {
        const PAUSE: Duration = Duration::from_secs(1);
        let mut warned = false;
        loop {
            match subscribed(&client, &self.channel).await {
                Ok(pubsub) => {
                    heard(Heard::Rejoined);
                    self.hearing.store(true, Ordering::Release);
                    tracing::info!(channel = %self.channel, "Hearing the read model's announcements.");
                    warned = false;
                    self.hear(pubsub, &heard).await;
                    self.hearing.store(false, Ordering::Release);
                    tracing::warn!(channel = %self.channel,
                        "Lost the read model's announcements; entries live the short time until they are heard again.");
                }
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(%error, channel = %self.channel,
                        "Cannot hear the read model's announcements yet; entries live the short time.");
                }
                Err(_) => {}
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Hands on what arrives until the connection ends or stops answering its probe.
    async fn hear(&self, pubsub: redis::aio::PubSub, heard: &impl Fn(Heard)) {
        let (mut sink, mut messages) = pubsub.split();
        let mut probe = tokio::time::interval(Self::PROBE);
        probe.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return;
                    };
                    let id = message
                        .get_payload::<String>()
                        .ok()
                        .and_then(|payload| Uuid::parse_str(&payload).ok());
                    match id {
                        Some(id) => heard(Heard::Changed(id)),
                        None => tracing::warn!(channel = %self.channel,
                            "An announcement on the read model's channel is not an id; ignored."),
                    }
                }
                _ = probe.tick() => {
                    let answered = tokio::time::timeout(Self::PROBE, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

async fn subscribed(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Announces the changes `waiting`, one after another, until every [`Announcements`] of the
/// channel is gone; the connection is made on first use and again after a failure.
async fn publish(
    client: redis::Client,
    channel: Arc<str>,
    mut waiting: tokio::sync::mpsc::Receiver<Uuid>,
) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut failing = false;
    while let Some(id) = waiting.recv().await {
        let sent = match connection.as_mut() {
            Some(connection) => publish_one(connection, &channel, id).await,
            None => match client.get_multiplexed_async_connection().await {
                Ok(mut made) => {
                    let sent = publish_one(&mut made, &channel, id).await;
                    connection = Some(made);
                    sent
                }
                Err(error) => Err(error),
            },
        };
        match sent {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(%channel, "Announcing the read model's changes again.");
            }
            Ok(()) => {}
            Err(error) => {
                connection = None;
                if !failing {
                    failing = true;
                    tracing::warn!(%error, %channel,
                        "Could not announce a change to the read model's other instances; they see it when their entry expires.");
                }
            }
        }
    }
}

async fn publish_one(
    connection: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    id: Uuid,
) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(id.to_string())
        .query_async(connection)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local Redis (`BANYAN_TEST_REDIS_URL`); `None` (skip) only with `BANYAN_SKIP_REDIS=1`
    /// outside CI, as the e2e suites.
    async fn redis() -> Option<String> {
        let url = std::env::var("BANYAN_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        match client.get_multiplexed_async_connection().await {
            Ok(_) => Some(url),
            Err(error)
                if std::env::var_os("CI").is_none()
                    && std::env::var("BANYAN_SKIP_REDIS").is_ok_and(|v| v == "1") =>
            {
                eprintln!("SKIPPED: Redis unreachable at {url}: {error}");
                None
            }
            Err(error) => panic!("Redis is unreachable at {url}: {error}"),
        }
    }

    fn settings(url: &str, channel: &str) -> ReadModelSettings {
        ReadModelSettings {
            redis_url: Some(url.into()),
            channel: Some(channel.into()),
            ..ReadModelSettings::default()
        }
    }

    fn joined(
        settings: &ReadModelSettings,
    ) -> (Announcements, tokio::sync::mpsc::UnboundedReceiver<Heard>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let announcements = Announcements::join(settings, "catalog", move |heard| {
            let _ = sender.send(heard);
        })
        .expect("valid settings")
        .expect("a Redis is named");
        (announcements, receiver)
    }

    async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Heard>) -> Heard {
        tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("heard within 10 s")
            .expect("still hearing")
    }

    #[tokio::test]
    async fn a_change_announced_by_one_instance_is_heard_by_every_instance() {
        let Some(url) = redis().await else {
            return;
        };
        let channel = format!("banyan.test.{}", Uuid::new_v4().simple());
        let (first, mut first_heard) = joined(&settings(&url, &channel));
        let (second, mut second_heard) = joined(&settings(&url, &channel));
        // Joining is heard first: whatever was cached before may have missed a change.
        assert_eq!(next(&mut first_heard).await, Heard::Rejoined);
        assert_eq!(next(&mut second_heard).await, Heard::Rejoined);
        assert!(first.hearing() && second.hearing());

        let id = Uuid::now_v7();
        first.announce(id);
        assert_eq!(next(&mut first_heard).await, Heard::Changed(id));
        assert_eq!(next(&mut second_heard).await, Heard::Changed(id));
    }

    /// A TCP relay to `to` that can go silent without closing anything, as a cut network or
    /// a host gone does: nothing tells either end.
    async fn relay(to: String) -> (String, Arc<AtomicBool>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let cut = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&to).await.unwrap();
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(from_client) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(to_server) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(from_server), Box::new(to_client)),
                ] {
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let mut buffer = [0_u8; 4096];
                        while let Ok(read) = from.read(&mut buffer).await {
                            if read == 0 || cut.load(Ordering::Acquire) {
                                // Silent from now on, the sockets held open.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buffer[..read]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        (format!("redis://{addr}/"), silent)
    }

    #[tokio::test]
    async fn an_instance_whose_connection_goes_silent_knows_it_no_longer_hears() {
        let Some(url) = redis().await else {
            return;
        };
        // host:port of a plain `redis://host:port/` URL.
        let target = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let (relayed, silent) = relay(target).await;
        let channel = format!("banyan.test.{}", Uuid::new_v4().simple());
        let (announcements, mut heard) = joined(&settings(&relayed, &channel));
        assert_eq!(next(&mut heard).await, Heard::Rejoined);
        assert!(announcements.hearing());

        silent.store(true, Ordering::Release);
        // The probe (every 2 s, answered within 2 s) finds out.
        tokio::time::timeout(Duration::from_secs(15), async {
            while announcements.hearing() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the silent connection was taken for a live one");
    }

    #[tokio::test]
    async fn an_instance_that_cannot_reach_redis_starts_and_does_not_hear() {
        // Nothing listens on port 1.
        let (announcements, mut heard) =
            joined(&settings("redis://127.0.0.1:1/", "banyan.test.nowhere"));
        announcements.announce(Uuid::now_v7());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!announcements.hearing());
        assert!(heard.try_recv().is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let zero = ReadModelSettings {
            ttl_secs: 0,
            ..ReadModelSettings::default()
        };
        let error = zero.validate("catalog").unwrap_err().to_string();
        assert!(
            error.contains("modules.catalog.read_model.ttl_secs"),
            "{error}"
        );
        let error = settings("http://example.com/", "c")
            .validate("catalog")
            .unwrap_err()
            .to_string();
        assert!(error.contains("redis_url"), "{error}");
        assert!(ReadModelSettings::default().validate("catalog").is_ok());
    }
}
