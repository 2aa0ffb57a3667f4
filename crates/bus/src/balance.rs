//! Which instance of a module a call goes to: the rule chosen for the module, and the calls
//! each instance has in flight.
//!
//! Used by the adapters that call an instance directly (HTTP, gRPC) and by main's gateway.
//! NATS is not balanced here: its queue groups hand each request to one subscriber of the
//! broker's choosing.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::seq::SliceRandom;

use crate::lock::{read, write};
use serde::Deserialize;

/// How a module's instances share its calls (`balance` in the module's placement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceRule {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// Power of two choices: of two instances picked at random, the one with fewer calls in
    /// flight; or, when one's recent latency is over four times the other's, the one a new
    /// call would wait least at, (calls in flight + 1) × latency. The latency is a moving
    /// average that fades while no call ends, so an instance avoided for one slow moment is
    /// soon tried again. A slow or stalled instance collects calls in flight and a high
    /// latency, so it gets few new ones; alike instances, whose latencies differ by noise,
    /// share evenly.
    LeastOutstanding,
    /// Any instance, at random.
    Random,
    /// The same key always to the same instance while the set of instances holds, and only the
    /// keys of an instance that leaves move (rendezvous hashing). The gateway's key is the
    /// caller (its token's subject, else its address); the bus's is the correlation id, so all
    /// the calls one outside request causes go to one instance. Without a key: round robin.
    ConsistentHash,
    /// Each instance in turn, as often as its weight says (`topology.weight` of its process,
    /// 1 by default): of every Σweights calls an instance of weight w gets exactly w,
    /// interleaved (in round r every instance of weight over r gets one), not in runs.
    Weighted,
}

/// The weight of each instance, by base URL, as its registration says: kept by the registry on
/// main and by the directory elsewhere, read by the balancers that share it.
#[derive(Debug, Default)]
pub struct Weights {
    by_instance: RwLock<HashMap<String, u32>>,
}

impl Weights {
    /// The most a weight may be: 100 to 1 is as lopsided as a share needs to get, and keeps a
    /// pick's walk over the rounds short.
    pub const MAX: u32 = 100;

    /// Records `instance`'s weight (clamped to 1..=[`Self::MAX`]).
    pub fn set(&self, instance: &str, weight: u32) {
        let weight = weight.clamp(1, Self::MAX);
        if read(&self.by_instance).get(instance) == Some(&weight) {
            return;
        }
        let mut weights = write(&self.by_instance);
        // Bounded: instances come and go; a forgotten one counts 1 until it registers again.
        if weights.len() >= 4_096 {
            weights.clear();
        }
        weights.insert(instance.to_owned(), weight);
    }

    /// `instance`'s weight; 1 when none was recorded.
    pub fn of(&self, instance: &str) -> u32 {
        read(&self.by_instance).get(instance).copied().unwrap_or(1)
    }
}

/// The rules of the modules, the turn of each, and every instance's calls in flight.
#[derive(Debug, Default)]
pub struct Balancer {
    rules: HashMap<String, BalanceRule>,
    weights: Arc<Weights>,
    cursors: RwLock<HashMap<String, Arc<AtomicUsize>>>,
    instances: RwLock<HashMap<String, Arc<Load>>>,
}

/// What the balancer knows of one instance.
#[derive(Debug, Default)]
struct Load {
    in_flight: AtomicUsize,
    /// Calls that ended; the first one's time is not a latency (it paid for the connection).
    ended: AtomicU64,
    /// A moving average of its latency in nanoseconds (`f64` bits; 0: not measured yet)...
    latency_ns: AtomicU64,
    /// ...as of this instant (nanoseconds since [`epoch`]).
    measured_at: AtomicU64,
}

/// How fast a latency estimate fades while no call ends: after `FADE` it weighs 1/e. An
/// instance avoided because it looked slow is tried again once its estimate has faded, so a
/// slow moment never starves an instance for good (the idea of tower's and Finagle's "peak
/// EWMA" load, whose estimates decay the same way).
const FADE: Duration = Duration::from_millis(300);

/// The instant the balancers measure from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl Load {
    /// The moving average of the latency as last measured (0: not yet).
    fn average(&self) -> f64 {
        f64::from_bits(self.latency_ns.load(Ordering::Relaxed))
    }

    /// The latency estimate now: the average, faded by the time since it was measured.
    fn latency(&self, now: u64) -> f64 {
        let average = f64::from_bits(self.latency_ns.load(Ordering::Relaxed));
        let since = now.saturating_sub(self.measured_at.load(Ordering::Relaxed)) as f64;
        average * (-since / FADE.as_nanos() as f64).exp()
    }

    /// What a new call would wait behind: the calls in flight and itself, each taking the
    /// estimated latency. A never-measured instance costs nothing, so it gets tried.
    fn cost(&self, now: u64) -> f64 {
        (self.in_flight.load(Ordering::Relaxed) as f64 + 1.0) * self.latency(now)
    }

    fn observe(&self, elapsed: Duration) {
        if self.ended.fetch_add(1, Ordering::Relaxed) == 0 {
            return;
        }
        let now = nanos_since_epoch(Instant::now());
        let sample = elapsed.as_nanos() as f64;
        let faded = self.latency(now);
        // Each call weighs a fifth: a few calls show a change, one outlier does not.
        let average = if faded == 0.0 {
            sample
        } else {
            faded * 0.8 + sample * 0.2
        };
        self.latency_ns.store(average.to_bits(), Ordering::Relaxed);
        self.measured_at.store(now, Ordering::Relaxed);
    }
}

impl Balancer {
    /// A balancer with `rules` per module (round robin for the others).
    pub fn new(rules: HashMap<String, BalanceRule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// The same balancer reading the instances' weights from `weights`.
    pub fn with_weights(mut self, weights: Arc<Weights>) -> Self {
        self.weights = weights;
        self
    }

    pub fn rule(&self, module: &str) -> BalanceRule {
        self.rules.get(module).copied().unwrap_or_default()
    }

    /// Puts the instance the rule picks first, then the others in the order a call tries them
    /// if the first cannot be reached: by rank for consistent hashing (so a key's second
    /// choice is stable too), shuffled otherwise, so the calls of an unreachable instance are
    /// spread over all the others instead of all going to its neighbour. `key` is what
    /// consistent hashing keys on.
    pub fn order(&self, module: &str, instances: &mut [String], key: Option<&str>) {
        let count = instances.len();
        if count < 2 {
            return;
        }
        let first = match (self.rule(module), key) {
            (BalanceRule::RoundRobin, _) | (BalanceRule::ConsistentHash, None) => {
                self.cursor(module).fetch_add(1, Ordering::Relaxed) % count
            }
            (BalanceRule::Random, _) => rand::random_range(0..count),
            (BalanceRule::LeastOutstanding, _) => {
                let a = rand::random_range(0..count);
                let b = (a + rand::random_range(1..count)) % count;
                let now = nanos_since_epoch(Instant::now());
                let (load_a, load_b) = (self.stats(&instances[a]), self.stats(&instances[b]));
                let (late_a, late_b) = (load_a.average(), load_b.average());
                // Average latencies within 4× of each other are noise between alike
                // instances: the calls in flight decide. Further apart, the time a new call
                // would wait does, with the estimates faded by how long they are unrefreshed.
                let apart = late_a > 4.0 * late_b || late_b > 4.0 * late_a;
                let (cost_a, cost_b) = if apart && late_a > 0.0 && late_b > 0.0 {
                    (load_a.cost(now), load_b.cost(now))
                } else {
                    let flight = |load: &Load| load.in_flight.load(Ordering::Relaxed) as f64;
                    (flight(&load_a), flight(&load_b))
                };
                if cost_a <= cost_b { a } else { b }
            }
            (BalanceRule::ConsistentHash, Some(key)) => {
                instances.sort_by_cached_key(|instance| std::cmp::Reverse(score(key, instance)));
                return;
            }
            (BalanceRule::Weighted, _) => {
                // A stable order, so that the turn means the same instance from call to call.
                instances.sort_unstable();
                let weights: Vec<u32> = instances.iter().map(|i| self.weights.of(i)).collect();
                let turn = self.cursor(module).fetch_add(1, Ordering::Relaxed);
                interleaved(&weights, turn)
            }
        };
        instances.swap(0, first);
        instances[1..].shuffle(&mut rand::rng());
    }

    /// Counts a call to `instance` as in flight until the returned guard is dropped, and
    /// its time then as the instance's latency.
    pub fn begin(&self, instance: &str) -> InFlight {
        let load = self.stats(instance);
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load,
            started: Instant::now(),
        }
    }

    /// The calls in flight to `instance`.
    pub fn in_flight(&self, instance: &str) -> usize {
        read(&self.instances)
            .get(instance)
            .map_or(0, |load| load.in_flight.load(Ordering::Relaxed))
    }

    fn cursor(&self, module: &str) -> Arc<AtomicUsize> {
        if let Some(cursor) = read(&self.cursors).get(module) {
            return cursor.clone();
        }
        write(&self.cursors)
            .entry(module.to_owned())
            .or_default()
            .clone()
    }

    fn stats(&self, instance: &str) -> Arc<Load> {
        if let Some(load) = read(&self.instances).get(instance) {
            return load.clone();
        }
        let mut instances = write(&self.instances);
        // Bounded: instances come and go; idle ones are safe to forget.
        if instances.len() >= 4_096 {
            instances.retain(|_, load| load.in_flight.load(Ordering::Relaxed) > 0);
        }
        instances.entry(instance.to_owned()).or_default().clone()
    }
}

/// A call in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.load.observe(self.started.elapsed());
    }
}

/// The instance whose turn `turn` is in an interleaved weighted round robin over `weights`:
/// the turns go round by round, and round r visits, in order, every instance whose weight is
/// over r, so each cycle of Σweights turns gives every instance its weight's worth.
fn interleaved(weights: &[u32], turn: usize) -> usize {
    let total: usize = weights.iter().map(|w| *w as usize).sum();
    let mut left = turn % total.max(1);
    for round in 0..Weights::MAX {
        for (at, weight) in weights.iter().enumerate() {
            if *weight > round {
                if left == 0 {
                    return at;
                }
                left -= 1;
            }
        }
    }
    0
}

/// Rendezvous hashing's score of `instance` for `key`: SipHash with fixed keys, so every
/// process of a topology ranks alike.
fn score(key: &str, instance: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    instance.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances() -> Vec<String> {
        ["http://a", "http://b", "http://c"]
            .map(str::to_owned)
            .to_vec()
    }

    fn shares(
        balancer: &Balancer,
        module: &str,
        key: impl Fn(usize) -> Option<String>,
    ) -> [usize; 3] {
        let mut counts = [0; 3];
        for i in 0..3_000 {
            let mut order = instances();
            balancer.order(module, &mut order, key(i).as_deref());
            let first = instances().iter().position(|x| *x == order[0]).unwrap_or(0);
            counts[first] += 1;
        }
        counts
    }

    #[test]
    fn each_rule_spreads_or_sticks_as_it_says() {
        let rules = [
            ("rr", BalanceRule::RoundRobin),
            ("p2c", BalanceRule::LeastOutstanding),
            ("random", BalanceRule::Random),
            ("hash", BalanceRule::ConsistentHash),
            ("weighted", BalanceRule::Weighted),
        ];
        let balancer = Balancer::new(rules.iter().map(|(m, r)| ((*m).to_owned(), *r)).collect());
        assert_eq!(shares(&balancer, "rr", |_| None), [1_000; 3]);
        for module in ["p2c", "random"] {
            for share in shares(&balancer, module, |_| None) {
                assert!((900..=1_100).contains(&share), "{module}: {share}");
            }
        }
        // One key, one instance; many keys spread over all.
        let one = shares(&balancer, "hash", |_| Some("user-7".into()));
        assert_eq!(one.iter().filter(|n| **n > 0).count(), 1, "{one:?}");
        for share in shares(&balancer, "hash", |i| Some(format!("user-{i}"))) {
            assert!((800..=1_200).contains(&share), "{share}");
        }
        // Unweighted instances share alike.
        assert_eq!(shares(&balancer, "weighted", |_| None), [1_000; 3]);
    }

    #[test]
    fn weighted_instances_get_their_weight_s_share_interleaved() {
        let weights = Arc::new(Weights::default());
        weights.set("http://a", 3);
        weights.set("http://c", 2);
        let balancer = Balancer::new(HashMap::from([("m".to_owned(), BalanceRule::Weighted)]))
            .with_weights(weights.clone());
        // 3 + 1 + 2 = 6: of 3,000 calls a gets 1,500, b 500, c 1,000.
        assert_eq!(shares(&balancer, "m", |_| None), [1_500, 500, 1_000]);
        // The next cycle (3,000 turns made: a new one starts), whatever order the instances
        // come in: round 0 visits all three, round 1 those over 1, round 2 those over 2.
        let cycle: Vec<String> = (0..6)
            .map(|_| {
                let mut order = vec!["http://c".into(), "http://a".into(), "http://b".into()];
                balancer.order("m", &mut order, None);
                order[0].clone()
            })
            .collect();
        assert_eq!(
            cycle,
            [
                "http://a", "http://b", "http://c", "http://a", "http://c", "http://a"
            ]
        );
        // Out-of-range weights are clamped, never zero.
        weights.set("http://b", 0);
        assert_eq!(weights.of("http://b"), 1);
        weights.set("http://b", 10_000);
        assert_eq!(weights.of("http://b"), Weights::MAX);
    }

    #[test]
    fn least_outstanding_avoids_the_instance_with_calls_in_flight() {
        let balancer = Balancer::new(HashMap::from([(
            "m".to_owned(),
            BalanceRule::LeastOutstanding,
        )]));
        let _stuck: Vec<InFlight> = (0..5).map(|_| balancer.begin("http://b")).collect();
        let counts = shares(&balancer, "m", |_| None);
        assert_eq!(counts[1], 0, "{counts:?}");
        drop(_stuck);
        assert_eq!(balancer.in_flight("http://b"), 0);
    }

    #[test]
    fn a_key_moves_only_when_its_instance_leaves() {
        let balancer = Balancer::new(HashMap::from([(
            "m".to_owned(),
            BalanceRule::ConsistentHash,
        )]));
        let pick = |instances: &[&str], key: &str| {
            let mut order: Vec<String> = instances.iter().map(|s| (*s).to_owned()).collect();
            balancer.order("m", &mut order, Some(key));
            order[0].clone()
        };
        for i in 0..200 {
            let key = format!("k{i}");
            let before = pick(&["http://a", "http://b", "http://c"], &key);
            let after = pick(&["http://a", "http://c"], &key);
            if before != "http://b" {
                assert_eq!(before, after, "{key}");
            }
        }
    }
}
