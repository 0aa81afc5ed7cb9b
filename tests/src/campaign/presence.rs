//! Watching registrations come back after an outage: which keys (or nodes) had to be written
//! again, when each was back for good, and which never came back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Reads what is registered now.
#[async_trait]
pub(crate) trait Present: Send {
    /// The keys present (and, where the backend tells, owned by the live session); `None` when
    /// the server did not answer.
    async fn present(&mut self) -> Option<BTreeSet<String>>;
}

/// What one outage came to.
#[derive(Debug, Default)]
pub(crate) struct Observation {
    /// Keys that were absent at some point after the server answered, with the time from the
    /// answer until they were back for good.
    pub(crate) delays: Vec<(String, Duration)>,
    /// From the answer until every expected key was present and no deregistered one was.
    pub(crate) all_back: Option<Duration>,
    /// Expected keys absent when the observation ended.
    pub(crate) missing: Vec<String>,
    /// Deregistered keys present when the observation ended.
    pub(crate) stale: Vec<String>,
    /// From the answer until the first successful read (delays below it are upper bounds).
    pub(crate) first_read: Option<Duration>,
}

/// Polls `reader` every `every` from `answering` on, until every `expected` key is present, no
/// `gone` key is, and `hold` has passed since `answering` (a lease or session that dies later
/// would show within it); or until `limit` has passed since `answering`.
pub(crate) async fn observe(
    reader: &mut dyn Present,
    expected: &BTreeSet<String>,
    gone: &BTreeSet<String>,
    answering: Instant,
    hold: Duration,
    limit: Duration,
    every: Duration,
) -> Observation {
    let mut since: BTreeMap<&str, Option<Instant>> =
        expected.iter().map(|k| (k.as_str(), None)).collect();
    let mut absent_once: BTreeSet<&str> = BTreeSet::new();
    let mut stale: Vec<String> = Vec::new();
    let mut all_ok_since: Option<Instant> = None;
    let mut first_read = None;
    loop {
        if let Some(present) = reader.present().await {
            let now = Instant::now();
            first_read.get_or_insert(now.saturating_duration_since(answering));
            for (key, first) in since.iter_mut() {
                if present.contains(*key) {
                    first.get_or_insert(now);
                } else {
                    *first = None;
                    absent_once.insert(key);
                }
            }
            stale = gone
                .iter()
                .filter(|k| present.contains(*k))
                .cloned()
                .collect();
            let ok = stale.is_empty() && since.values().all(Option::is_some);
            if !ok {
                all_ok_since = None;
            } else if all_ok_since.is_none() {
                all_ok_since = Some(now);
            }
            if ok && now >= answering + hold {
                break;
            }
        }
        if answering.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(every).await;
    }
    let mut observation = Observation {
        all_back: all_ok_since.map(|t| t.saturating_duration_since(answering)),
        stale,
        first_read,
        ..Observation::default()
    };
    for (key, first) in &since {
        match first {
            Some(at) if absent_once.contains(key) => observation
                .delays
                .push((key.to_string(), at.saturating_duration_since(answering))),
            Some(_) => {}
            None => observation.missing.push(key.to_string()),
        }
    }
    observation
}
