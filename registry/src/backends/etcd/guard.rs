//! The guard: a watch on our keys, so that a key of ours someone else deletes or overwrites is
//! seen (and restored) however soon it happens.
//!
//! It watches the whole prefix. When etcd does not let the user watch that (RBAC that allows a
//! user one service's prefix, `kitex/registry-etcd/svc-a/`), etcd cancels the watch with
//! "permission denied" at once; recreating it would only be cancelled again. The guard then
//! watches each service's prefix instead, all on the same stream, and leaves unguarded only a
//! service whose prefix the user may not watch either (it may not write there anyway).

use std::collections::{BTreeSet, HashMap, VecDeque};

use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};

use super::config::EtcdConfig;
use super::error::bounded;
use crate::registry::RegistryError;

/// What etcd says when a user may not watch a range.
const PERMISSION_DENIED: &str = "permission denied";

/// What the guard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// The whole prefix, in one watch.
    Prefix,
    /// Each service's prefix, one watch each on one stream.
    PerService,
}

/// What the guard saw.
pub(super) enum Seen {
    /// Changes to check against the live set.
    Changes(WatchResponse),
    /// The user may not watch the whole prefix: watch per service from now on.
    PrefixDenied,
    /// The user may not watch this service's prefix: it stays unguarded.
    ServiceDenied(String),
    /// The watch ended, failed, was cancelled or compacted: start it again.
    Ended(String),
}

/// The prefix of `key`'s service: `{prefix}/{service}/` (keys are `{prefix}/{service}/{addr}`).
pub(super) fn service_prefix(key: &str) -> &str {
    key.rfind('/').map_or(key, |slash| &key[..=slash])
}

/// A running guard watch.
pub(super) struct Guard {
    stream: WatchStream,
    scope: Scope,
    /// Per service: what each watch id watches (ids are ours: 1, 2, ...).
    ids: HashMap<i64, String>,
    /// The service prefixes asked for, watched or denied.
    asked: BTreeSet<String>,
    /// Watches asked for and not yet confirmed, in order: a denial that names no id (an etcd
    /// that assigns ids itself) is the oldest of them.
    unconfirmed: VecDeque<i64>,
    next_id: i64,
}

impl Guard {
    /// Opens the guard from `revision + 1` (all history when 0). Per service it watches the
    /// prefixes of `keys`; `None` when there are none (nothing to guard yet).
    pub(super) async fn open<'a>(
        config: &EtcdConfig,
        client: &Client,
        scope: Scope,
        keys: impl Iterator<Item = &'a String>,
        revision: i64,
    ) -> Result<Option<Self>, RegistryError> {
        let mut client = client.clone();
        let limit = config.request_timeout;
        match scope {
            Scope::Prefix => {
                let options = options(revision, 0);
                let prefix = format!("{}/", config.prefix);
                let stream = bounded(config, limit, client.watch(prefix, Some(options))).await?;
                Ok(Some(Self::new(stream, scope)))
            }
            Scope::PerService => {
                let prefixes: BTreeSet<String> =
                    keys.map(|k| service_prefix(k).to_string()).collect();
                let mut prefixes = prefixes.into_iter();
                let Some(first) = prefixes.next() else {
                    return Ok(None);
                };
                let stream = bounded(
                    config,
                    limit,
                    client.watch(first.clone(), Some(options(revision, 1))),
                )
                .await?;
                let mut guard = Self::new(stream, scope);
                guard.asked.insert(first.clone());
                guard.ids.insert(1, first);
                guard.unconfirmed.push_back(1);
                guard.next_id = 2;
                for prefix in prefixes {
                    guard
                        .watch(prefix, revision)
                        .await
                        .map_err(|err| super::error::registry_error(config, err))?;
                }
                Ok(Some(guard))
            }
        }
    }

    fn new(stream: WatchStream, scope: Scope) -> Self {
        Self {
            stream,
            scope,
            ids: HashMap::new(),
            asked: BTreeSet::new(),
            unconfirmed: VecDeque::new(),
            next_id: 1,
        }
    }

    async fn watch(&mut self, prefix: String, revision: i64) -> Result<(), etcd_client::Error> {
        let id = self.next_id;
        self.next_id += 1;
        self.stream
            .watch(prefix.clone(), Some(options(revision, id)))
            .await?;
        self.asked.insert(prefix.clone());
        self.ids.insert(id, prefix);
        self.unconfirmed.push_back(id);
        Ok(())
    }

    /// Per service: starts watching, from `revision + 1`, the services of `keys` not watched
    /// yet (registered since the guard opened). Nothing to do for the whole prefix.
    pub(super) async fn cover<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a String>,
        revision: i64,
    ) -> Result<(), String> {
        if self.scope == Scope::Prefix {
            return Ok(());
        }
        let new: BTreeSet<String> = keys
            .map(|k| service_prefix(k))
            .filter(|p| !self.asked.contains(*p))
            .map(str::to_string)
            .collect();
        for prefix in new {
            self.watch(prefix, revision)
                .await
                .map_err(|err| format!("cannot add a watch to the guard: {err}"))?;
        }
        Ok(())
    }

    /// The next thing the guard sees (cancel-safe: only the stream is awaited).
    pub(super) async fn next(&mut self) -> Seen {
        match self.stream.message().await {
            Ok(Some(response)) => self.sort(response),
            Ok(None) => Seen::Ended("the guard watch ended".into()),
            Err(err) => Seen::Ended(format!("the guard watch failed: {err}")),
        }
    }

    fn sort(&mut self, response: WatchResponse) -> Seen {
        let id = response.watch_id();
        if response.created() || response.canceled() {
            let position = self.unconfirmed.iter().position(|&i| i == id);
            match position {
                Some(at) => {
                    self.unconfirmed.remove(at);
                }
                // A cancel naming no id of ours answers the oldest request.
                None if response.canceled() && !self.ids.contains_key(&id) => {
                    if let Some(oldest) = self.unconfirmed.pop_front() {
                        return self.cancelled(oldest, &response);
                    }
                }
                None => {}
            }
        }
        if response.canceled() {
            return self.cancelled(id, &response);
        }
        Seen::Changes(response)
    }

    fn cancelled(&mut self, id: i64, response: &WatchResponse) -> Seen {
        let reason = response.cancel_reason();
        let denied = reason.contains(PERMISSION_DENIED);
        match self.scope {
            Scope::Prefix if denied => Seen::PrefixDenied,
            Scope::PerService if denied => match self.ids.remove(&id) {
                Some(prefix) => Seen::ServiceDenied(prefix),
                None => Seen::Ended(format!("a guard watch was cancelled: {reason}")),
            },
            _ if response.compact_revision() != 0 => Seen::Ended(format!(
                "the guard watch fell behind a compaction (revision {})",
                response.compact_revision()
            )),
            _ => Seen::Ended(format!("the guard watch was cancelled: {reason}")),
        }
    }
}

/// A prefix watch from `revision + 1` (all history when 0), with our id (0: etcd's choice).
fn options(revision: i64, id: i64) -> WatchOptions {
    let mut options = WatchOptions::new().with_prefix().with_watch_id(id);
    if revision > 0 {
        options = options.with_start_revision(revision + 1);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_service_prefix_ends_with_its_slash() {
        assert_eq!(
            service_prefix("kitex/registry-etcd/svc-a/127.0.0.1:80"),
            "kitex/registry-etcd/svc-a/"
        );
        assert_eq!(
            service_prefix("kitex/registry-etcd/svc-a/[::1]:80"),
            "kitex/registry-etcd/svc-a/"
        );
    }
}
