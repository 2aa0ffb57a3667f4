//! Driving the load: open loop on a schedule, or closed loop at a concurrency; the figures of
//! every request recorded per kind.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use banyan_stats::Latencies;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Client;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    Drive,
    mix::{Kind, Mix, Shop},
};

/// What a run does.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) drive: Drive,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) warmup: Duration,
    pub(crate) measured: Duration,
    pub(crate) server_pid: Option<u32>,
}

/// One kind's figures over the measured part of a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct KindFigures {
    pub(crate) latencies: Latencies,
    /// Answers by status code; `0` for a request that got no answer (refused, timed out).
    pub(crate) statuses: BTreeMap<u16, u64>,
}

impl KindFigures {
    pub(crate) fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub(crate) struct Figures {
    pub(crate) per_kind: BTreeMap<Kind, KindFigures>,
    /// How long the measured part took, from its first due request to its last answer.
    pub(crate) elapsed: Duration,
    /// Open loop: how far behind schedule the sender ever fell (the generator's own limit).
    pub(crate) worst_send_lag: Duration,
    /// The server's peak resident memory, in bytes (`--server-pid`).
    pub(crate) server_peak_rss: Option<u64>,
}

/// The shared recording of a run; `measuring` is off during the warm-up.
struct Recorder {
    measuring: AtomicBool,
    per_kind: Mutex<BTreeMap<Kind, KindFigures>>,
    /// Answers so far in the measured part, and of those not 2xx: for the progress bar.
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    fn record(&self, kind: Kind, latency: Duration, status: u16) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        if !(200..300).contains(&status) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut per_kind = self.per_kind.lock().unwrap_or_else(|e| e.into_inner());
        let figures = per_kind.entry(kind).or_default();
        figures.latencies.record(latency);
        *figures.statuses.entry(status).or_default() += 1;
    }
}

/// Sends one request of `kind` and records it, timed from `due`.
async fn send(client: &Client, shop: &Shop, recorder: &Recorder, kind: Kind, due: Instant) {
    let status = match shop.request(client, kind).send().await {
        // The body is part of the answer: read to its end before the clock stops.
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    };
    recorder.record(kind, due.elapsed(), status);
}

pub(crate) async fn run(client: &Client, shop: &Arc<Shop>, settings: &Settings) -> Figures {
    let recorder = Arc::new(Recorder {
        measuring: AtomicBool::new(false),
        per_kind: Mutex::default(),
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mix = Mix::new(settings.kinds.clone());
    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.measured;
    let progress = progress_bar(settings, &recorder, measure_from, end);
    let rss = settings
        .server_pid
        .map(|pid| tokio::spawn(peak_rss(pid, end)));
    let switch_on = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            recorder.measuring.store(true, Ordering::Relaxed);
        })
    };
    let worst_send_lag = match settings.drive {
        Drive::OpenLoop {
            rate,
            max_in_flight,
        } => {
            open_loop(
                client,
                shop,
                &recorder,
                &mix,
                (start, end),
                rate,
                max_in_flight,
            )
            .await
        }
        Drive::ClosedLoop { connections } => {
            closed_loop(client, shop, &recorder, &mix, end, connections).await;
            Duration::ZERO
        }
    };
    let _ = switch_on.await;
    let elapsed = measure_from.elapsed();
    progress.finish_and_clear();
    let server_peak_rss = match rss {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let per_kind =
        std::mem::take(&mut *recorder.per_kind.lock().unwrap_or_else(|e| e.into_inner()));
    Figures {
        per_kind,
        elapsed,
        worst_send_lag,
        server_peak_rss,
    }
}

/// Request `n` is due at `start + n / rate`; whatever is due is sent, each in a task of its
/// own, at most `max_in_flight` at once. Returns how far behind the schedule sending fell.
async fn open_loop(
    client: &Client,
    shop: &Arc<Shop>,
    recorder: &Arc<Recorder>,
    mix: &Mix,
    (start, end): (Instant, Instant),
    rate: u64,
    max_in_flight: u64,
) -> Duration {
    let slots = Arc::new(Semaphore::new(max_in_flight as usize));
    let tasks = tokio_util::task::TaskTracker::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut worst_lag = Duration::ZERO;
    let mut n: u64 = 0;
    loop {
        let due = start + interval.mul_f64(n as f64);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
        } else {
            worst_lag = worst_lag.max(now - due);
        }
        // A full house: the due request waits for a slot, and the wait is in its latency.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let kind = mix.pick(n);
        let (client, shop, recorder) = (client.clone(), shop.clone(), recorder.clone());
        tasks.spawn(async move {
            send(&client, &shop, &recorder, kind, due).await;
            drop(slot);
        });
        n += 1;
    }
    tasks.close();
    tasks.wait().await;
    worst_lag
}

/// `connections` clients, each sending its next request once its last was answered.
async fn closed_loop(
    client: &Client,
    shop: &Shop,
    recorder: &Arc<Recorder>,
    mix: &Mix,
    end: Instant,
    connections: u64,
) {
    let next = AtomicU64::new(0);
    let clients = (0..connections).map(|_| async {
        while Instant::now() < end {
            let n = next.fetch_add(1, Ordering::Relaxed);
            send(client, shop, recorder, mix.pick(n), Instant::now()).await;
        }
    });
    futures::future::join_all(clients).await;
}

fn progress_bar(
    settings: &Settings,
    recorder: &Arc<Recorder>,
    measure_from: Instant,
    end: Instant,
) -> ProgressBar {
    let total = (settings.warmup + settings.measured).as_secs().max(1);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("load");
    let (bar_ticker, recorder) = (bar.clone(), recorder.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last = 0;
        while Instant::now() < end && !bar_ticker.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            bar_ticker.set_position(started.elapsed().as_secs().min(total));
            let answered = recorder.answered.load(Ordering::Relaxed);
            let failed = recorder.failed.load(Ordering::Relaxed);
            if Instant::now() < measure_from {
                bar_ticker.set_message("warming up");
            } else {
                let rate = (answered - last) * 2;
                bar_ticker.set_message(format!("{rate} answers/s, {failed} errors"));
            }
            last = answered;
        }
    });
    bar
}

/// The highest resident memory of process `pid` until `end`, sampled every 100 ms from
/// /proc (Linux); `None` where /proc cannot tell.
async fn peak_rss(pid: u32, end: Instant) -> Option<u64> {
    let path = format!("/proc/{pid}/status");
    let mut peak = None;
    while Instant::now() < end {
        if let Ok(status) = tokio::fs::read_to_string(&path).await
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            peak = Some(peak.unwrap_or(0).max(kib * 1024));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}
