//! The ZooKeeper session: one session for the process, its ephemeral nodes, and recovery (new
//! session + every live node created again) whenever the session expires or is lost.
//!
//! One task owns the client and the live set; [`ZookeeperRegistry`](super::ZookeeperRegistry)
//! handles talk to it through a channel, so concurrent registrations are created together in
//! multi-ops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use zookeeper_client::{
    Acl, Acls, AddWatchMode, Client, CreateMode, CreateOptions, Error as ZkError, EventType,
    Permission, SessionInfo, SessionState, StateWatcher, WatchedEvent,
};

use super::config::ZookeeperConfig;
use super::error::{bounded, registry_error, timed_out};
use crate::backends::handle::{Command, Reply};
use crate::backends::live::{absorb_queued, wait_offline, LiveSet};
use crate::registry::shared;
use crate::registry::{Health, RegistryError};

/// A put waiting for the next multi-op: path, data, reply.
type PendingPut = (String, Vec<u8>, Reply);

/// Our own nodes: the creator gets every permission, everyone else may read.
static PROTECTED: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

/// Parents are shared with other teams' services under the same root: anyone may list them and
/// create children there. Deleting a child needs DELETE on its parent, which only the creator
/// has, so nobody else can remove our nodes (another team's own nodes under our service
/// directory go with its session).
static SHARED_PARENT: std::sync::LazyLock<[Acl; 2]> = std::sync::LazyLock::new(|| {
    [
        Acl::new_const(Permission::ALL, "auth", ""),
        Acl::new(
            Permission::READ | Permission::CREATE,
            zookeeper_client::AuthId::anyone(),
        ),
    ]
});

fn node_acls(config: &ZookeeperConfig) -> Acls<'static> {
    if config.auth.is_some() {
        Acls::new(&PROTECTED)
    } else {
        // What Kitex uses without auth: world ALL.
        Acls::anyone_all()
    }
}

fn parent_acls(config: &ZookeeperConfig) -> Acls<'static> {
    if config.auth.is_some() {
        Acls::new(&*SHARED_PARENT)
    } else {
        Acls::anyone_all()
    }
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').filter(|i| *i > 0).map(|i| &path[..i])
}

/// Connects a new session with the configured credentials.
pub(crate) async fn connect(config: &ZookeeperConfig) -> Result<Client, RegistryError> {
    let mut connector = Client::connector()
        .with_session_timeout(config.session_timeout)
        .with_connection_timeout(config.connect_timeout)
        .with_fail_eagerly();
    if let Some((user, password)) = &config.auth {
        connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
    }
    let limit = config.connect_timeout + config.session_timeout;
    bounded(config, limit, connector.connect(&config.connect)).await
}

/// True for errors that say the connection or session is gone (as opposed to the server
/// refusing this one operation).
fn is_connection_error(err: &RegistryError) -> bool {
    matches!(err, RegistryError::Unavailable { .. })
}

/// Watches over the directories of our nodes within one session and forwards their events, so
/// that a node of ours deleted or overwritten by someone else is seen and restored. Its tasks
/// end when it is dropped (with the session).
struct Guard {
    sender: mpsc::UnboundedSender<WatchedEvent>,
    events: mpsc::UnboundedReceiver<WatchedEvent>,
    dirs: BTreeMap<String, tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for task in self.dirs.values() {
            task.abort();
        }
    }
}

impl Guard {
    fn new() -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        Self {
            sender,
            events,
            dirs: BTreeMap::new(),
        }
    }

    /// Watches every directory in `dirs` not watched yet (one persistent recursive watch each).
    async fn cover(&mut self, client: &Client, config: &ZookeeperConfig, dirs: &BTreeSet<String>) {
        for dir in dirs {
            if self.dirs.contains_key(dir) {
                continue;
            }
            let watch = client.watch(dir, AddWatchMode::PersistentRecursive);
            let mut watcher = match bounded(config, config.request_timeout, watch).await {
                Ok(watcher) => watcher,
                Err(err) => {
                    tracing::debug!(dir, error = %err, "cannot watch a directory of ours yet; retrying later");
                    return;
                }
            };
            let sender = self.sender.clone();
            let task = tokio::spawn(async move {
                loop {
                    let event = watcher.changed().await;
                    if event.event_type == EventType::Session && event.session_state.is_terminated()
                    {
                        return;
                    }
                    if sender.send(event).is_err() {
                        return;
                    }
                }
            });
            self.dirs.insert(dir.clone(), task);
        }
    }

    async fn next(&mut self) -> WatchedEvent {
        match self.events.recv().await {
            Some(event) => event,
            // Cannot happen: the guard holds a sender itself.
            None => std::future::pending().await,
        }
    }
}

pub(crate) struct Session {
    config: ZookeeperConfig,
    /// Every registration this process holds, and the removals not yet confirmed.
    live: LiveSet,
    /// Live paths not (yet) written in the current session: created again on reconnect.
    unwritten: BTreeSet<String>,
    health: watch::Sender<Health>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The current session's id and password, for operators and tests.
    current: Arc<Mutex<Option<SessionInfo>>>,
    /// Parent paths known to exist in this session.
    parents: BTreeSet<String>,
}

enum Step {
    Lost(String),
    /// The server answers, but no longer knows our session: start over with this new one.
    Replaced(Client),
    Stop(Option<oneshot::Sender<()>>),
}

impl Session {
    pub(crate) fn new(
        config: ZookeeperConfig,
        health: watch::Sender<Health>,
        commands: mpsc::UnboundedReceiver<Command>,
        current: Arc<Mutex<Option<SessionInfo>>>,
    ) -> Self {
        Self {
            config,
            live: LiveSet::default(),
            unwritten: BTreeSet::new(),
            health,
            commands,
            current,
            parents: BTreeSet::new(),
        }
    }

    fn set_current(&self, info: Option<SessionInfo>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = info;
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = self.config.backoff.clone();
        let mut failures = 0u32;
        let mut fresh: Option<Client> = None;
        loop {
            let established = match fresh.take() {
                Some(client) => self.establish_on(client).await,
                None => self.establish().await,
            };
            let err = match established {
                Ok(Some((client, states))) => {
                    backoff.reset();
                    failures = 0;
                    self.set_current(Some(client.session().clone()));
                    let _ = self.health.send(Health::Healthy);
                    tracing::info!(session = %client.session_id(), nodes = self.live.len(), "ZooKeeper session established; registrations live");
                    match self.serve(&client, states).await {
                        Step::Stop(done) => return finish(done),
                        Step::Replaced(new) => {
                            tracing::warn!(session = %client.session_id(), "ZooKeeper answers but no longer holds our session (restarted without its data?); starting a new one now");
                            fresh = Some(new);
                            self.set_current(None);
                            continue;
                        }
                        Step::Lost(cause) => {
                            tracing::warn!(session = %client.session_id(), %cause, "ZooKeeper session lost; starting a new one");
                            self.set_current(None);
                            let _ = self.health.send(Health::Recovering {
                                attempt: 0,
                                last_error: cause,
                            });
                            continue;
                        }
                    }
                }
                Ok(None) => return finish(None),
                Err((err, None)) => err,
                Err((_, Some(done))) => return finish(Some(done)),
            };
            failures += 1;
            let delay = backoff.next_delay();
            tracing::warn!(attempt = failures, error = %err, retry_in = ?delay, "cannot establish a ZooKeeper session");
            let _ = self.health.send(Health::Recovering {
                attempt: failures,
                last_error: err.to_string(),
            });
            if let Some(done) = wait_offline(&mut self.commands, &mut self.live, delay, &err).await
            {
                // Closed while ZooKeeper is away: nothing to reach; the session expires alone.
                self.live.clear();
                return finish(done);
            }
        }
    }

    async fn establish(
        &mut self,
    ) -> Result<Option<(Client, StateWatcher)>, (RegistryError, Option<oneshot::Sender<()>>)> {
        let client = connect(&self.config).await.map_err(|err| (err, None))?;
        self.establish_on(client).await
    }

    /// Applies what was queued meanwhile and creates every live node in the new session
    /// `client`. `Ok(None)`: closed meanwhile.
    async fn establish_on(
        &mut self,
        client: Client,
    ) -> Result<Option<(Client, StateWatcher)>, (RegistryError, Option<oneshot::Sender<()>>)> {
        // Subscribe before anything else, so no state change of this session can be missed.
        let states = client.state_watcher();
        self.parents.clear();
        let absorbed = absorb_queued(&mut self.commands, &mut self.live);
        if let Some(done) = absorbed.close {
            self.close(&client).await;
            return Err((self.closed_error(), Some(done)));
        }
        // Removals still pending: a node of an earlier session may still be there.
        self.delete_doomed(&client).await;
        let entries: Vec<(String, Vec<u8>)> = self
            .live
            .keys()
            .filter_map(|k| self.live.value(k).map(|v| (k.clone(), v.to_vec())))
            .collect();
        self.unwritten = entries.iter().map(|(p, _)| p.clone()).collect();
        let mut outcome = Ok(());
        let mut refusals = BTreeMap::new();
        for ((path, data), result) in entries.iter().zip(self.create_all(&client, &entries).await) {
            match result {
                Ok(()) => {
                    self.unwritten.remove(path);
                }
                Err(err) if is_connection_error(&err) => {
                    outcome = Err(err);
                    break;
                }
                Err(err) => {
                    tracing::error!(path, error = %err, "ZooKeeper refuses this registration; it is dropped");
                    self.live.refused(path, data);
                    self.unwritten.remove(path);
                    refusals.insert(path.clone(), err);
                }
            }
        }
        for (path, waiter) in absorbed.puts {
            let result = match (&outcome, refusals.get(&path)) {
                (Err(err), _) | (Ok(()), Some(err)) => Err(err.clone()),
                (Ok(()), None) => Ok(()),
            };
            let _ = waiter.send(result);
        }
        match outcome {
            Ok(()) => Ok(Some((client, states))),
            Err(err) => {
                self.live.deletes_failed(&err);
                Err((err, None))
            }
        }
    }

    fn disconnected(&self) -> RegistryError {
        RegistryError::Unavailable {
            backend: "zookeeper",
            endpoint: self.config.connect.clone(),
            source: shared("disconnected from ZooKeeper; written once the session reconnects (removals: or gone when it expires)"),
        }
    }

    fn closed_error(&self) -> RegistryError {
        RegistryError::Backend {
            backend: "zookeeper",
            source: shared("the registry was closed"),
        }
    }

    /// Creates `entries` as ephemeral nodes: parents first, then one multi-op per
    /// `max_multi_ops` nodes; a failed multi-op falls back to node-by-node creation.
    async fn create_all(
        &mut self,
        client: &Client,
        entries: &[(String, Vec<u8>)],
    ) -> Vec<Result<(), RegistryError>> {
        let results = self.create_all_once(client, entries).await;
        // A parent deleted from outside since we created it: forget what we knew, try again.
        let parent_missing = |r: &Result<(), RegistryError>| {
            matches!(r, Err(RegistryError::Backend { source, .. })
                if matches!(source.downcast_ref::<ZkError>(), Some(ZkError::NoNode)))
        };
        if results.iter().any(parent_missing) {
            tracing::info!("a parent node disappeared; creating parents again");
            self.parents.clear();
            return self.create_all_once(client, entries).await;
        }
        results
    }

    async fn create_all_once(
        &mut self,
        client: &Client,
        entries: &[(String, Vec<u8>)],
    ) -> Vec<Result<(), RegistryError>> {
        let limit = self.config.request_timeout;
        let parent_options = CreateMode::Persistent.with_acls(parent_acls(&self.config));
        let needed: BTreeSet<String> = entries
            .iter()
            .filter_map(|(path, _)| parent(path).map(str::to_string))
            .filter(|p| !self.parents.contains(p))
            .collect();
        // Parents and multi-ops are pipelined: sent together, answered in order.
        let mkdirs = needed
            .iter()
            .map(|dir| bounded(&self.config, limit, client.mkdir(dir, &parent_options)));
        let mut failed_dirs = BTreeMap::new();
        for (dir, result) in needed
            .iter()
            .zip(futures_util::future::join_all(mkdirs).await)
        {
            match result {
                Ok(()) => {
                    self.parents.insert(dir.clone());
                }
                Err(err) => {
                    failed_dirs.insert(dir.clone(), err);
                }
            }
        }
        let options = CreateMode::Ephemeral.with_acls(node_acls(&self.config));
        let creatable: Vec<&(String, Vec<u8>)> = entries
            .iter()
            .filter(|(path, _)| parent(path).is_none_or(|p| !failed_dirs.contains_key(p)))
            .collect();
        let chunks: Vec<&[&(String, Vec<u8>)]> =
            creatable.chunks(self.config.max_multi_ops.max(1)).collect();
        let commits = chunks.iter().map(|chunk| {
            let options = &options;
            async move {
                let mut writer = client.new_multi_writer();
                for (path, data) in chunk.iter().map(|e| (&e.0, &e.1)) {
                    if writer.add_create(path, data, options).is_err() {
                        return false;
                    }
                }
                matches!(
                    tokio::time::timeout(limit, writer.commit()).await,
                    Ok(Ok(_))
                )
            }
        });
        let committed = futures_util::future::join_all(commits).await;
        let mut by_path: BTreeMap<&str, Result<(), RegistryError>> = BTreeMap::new();
        for (chunk, committed) in chunks.into_iter().zip(committed) {
            for (path, data) in chunk.iter().map(|e| (&e.0, &e.1)) {
                let result = if committed {
                    Ok(())
                } else {
                    // Some node exists already (ours from this session, or left by an earlier
                    // one): create one by one, replacing what must be replaced.
                    self.create_one(client, path, data, &options).await
                };
                by_path.insert(path.as_str(), result);
            }
        }
        entries
            .iter()
            .map(|(path, _)| {
                if let Some(err) = parent(path).and_then(|p| failed_dirs.get(p)) {
                    return Err(err.clone());
                }
                by_path.remove(path.as_str()).unwrap_or_else(|| Ok(()))
            })
            .collect()
    }

    /// Creates one ephemeral node. A node already there is ours if this session owns it (its
    /// data is updated); one left by an earlier session is about to vanish, so it is replaced.
    async fn create_one(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        options: &CreateOptions<'_>,
    ) -> Result<(), RegistryError> {
        let limit = self.config.request_timeout;
        for _ in 0..3 {
            match tokio::time::timeout(limit, client.create(path, data, options)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(ZkError::NodeExists)) => {}
                Ok(Err(err)) => return Err(registry_error(&self.config, err)),
                Err(_) => return Err(timed_out(&self.config, limit)),
            }
            let stat = bounded(&self.config, limit, client.check_stat(path)).await?;
            match stat {
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    return bounded(&self.config, limit, client.set_data(path, data, None))
                        .await
                        .map(|_| ());
                }
                Some(stat) => {
                    tracing::info!(
                        path,
                        owner = stat.ephemeral_owner,
                        "replacing a node left by an earlier session"
                    );
                    match tokio::time::timeout(limit, client.delete(path, Some(stat.version))).await
                    {
                        // Gone or changed meanwhile: create again.
                        Ok(Ok(())) | Ok(Err(ZkError::NoNode)) | Ok(Err(ZkError::BadVersion)) => {}
                        Ok(Err(err)) => return Err(registry_error(&self.config, err)),
                        Err(_) => return Err(timed_out(&self.config, limit)),
                    }
                }
                None => {}
            }
        }
        Err(RegistryError::Backend {
            backend: "zookeeper",
            source: shared(format!("{path} keeps being recreated by another session")),
        })
    }

    /// Deletes every pending removal; what fails for want of a connection stays pending, what
    /// the server refuses is reported and dropped (the node is not ours to delete).
    async fn delete_doomed(&mut self, client: &Client) {
        if client.state() != SessionState::SyncConnected {
            // Not now: accepted at once (as while no session is held), deleted once
            // reconnected, or gone with the session.
            self.live.owner_pending();
            return;
        }
        let limit = self.config.request_timeout;
        for path in self.live.doomed_keys() {
            match tokio::time::timeout(limit, client.delete(&path, None)).await {
                Ok(Ok(())) | Ok(Err(ZkError::NoNode)) => self.live.deleted(&path),
                Ok(Err(err)) => {
                    let refused = matches!(
                        err,
                        ZkError::NoAuth | ZkError::NotEmpty | ZkError::BadArguments(_)
                    );
                    let err = registry_error(&self.config, err);
                    self.live.delete_failed(&path, &err);
                    if refused {
                        tracing::warn!(path, error = %err, "ZooKeeper refuses to delete this node; giving up on it");
                        self.live.deleted(&path);
                    }
                }
                Err(_) => self
                    .live
                    .delete_failed(&path, &timed_out(&self.config, limit)),
            }
        }
    }

    /// Serves commands and watches the session until it is lost or the registry closes.
    async fn serve(&mut self, client: &Client, mut states: StateWatcher) -> Step {
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While disconnected, how often to check whether the server still knows our session.
        let mut probe = tokio::time::interval(Duration::from_millis(200));
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disconnected_since: Option<Instant> = None;
        let mut guard = Guard::new();
        // The state may have changed between connecting and now.
        let mut state = client.state();
        loop {
            if state == SessionState::SyncConnected && guard.dirs.len() < self.parents.len() {
                guard.cover(client, &self.config, &self.parents).await;
            }
            match state {
                SessionState::Disconnected => {
                    if disconnected_since.is_none() {
                        disconnected_since = Some(Instant::now());
                        let _ = self.health.send(Health::Recovering {
                            attempt: 0,
                            last_error: "disconnected from ZooKeeper; reconnecting within the session timeout".into(),
                        });
                    }
                }
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    if disconnected_since.take().is_some() {
                        // What failed while disconnected is done now, not at the next tick.
                        self.delete_doomed(client).await;
                        self.write_unwritten(client).await;
                        let _ = self.health.send(Health::Healthy);
                    }
                }
                SessionState::Expired => return Step::Lost("the session expired".into()),
                SessionState::AuthFailed => return Step::Lost("authentication failed".into()),
                SessionState::Closed => return Step::Lost("the session was closed".into()),
            }
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.close(client).await;
                        return Step::Stop(None);
                    };
                    if let Some(step) = self.apply_batch(client, command).await {
                        return step;
                    }
                }
                new_state = states.changed() => state = new_state,
                event = guard.next() => {
                    if matches!(event.event_type, EventType::NodeDeleted | EventType::NodeDataChanged)
                        && self.live.contains(&event.path)
                        && !self.unwritten.contains(&event.path)
                    {
                        self.restore(client, &event.path).await;
                    }
                }
                _ = probe.tick(), if disconnected_since.is_some() => {
                    if let Some(fresh) = self.session_refused(client).await {
                        return Step::Replaced(fresh);
                    }
                }
                _ = retry.tick(), if disconnected_since.is_none() && (self.live.has_doomed() || !self.unwritten.is_empty()) => {
                    self.delete_doomed(client).await;
                    self.write_unwritten(client).await;
                }
            }
        }
    }

    /// While our session is disconnected: if ZooKeeper answers a new session and no longer
    /// holds ours (our nodes are gone or owned by another session, as after a restart without
    /// its data, which refuses our session id), our client would only keep retrying until the
    /// session timeout. Returns the new session to start over with at once.
    async fn session_refused(&self, client: &Client) -> Option<Client> {
        let probe = self
            .config
            .clone()
            .connect_timeout(self.config.connect_timeout.min(Duration::from_millis(500)));
        let fresh = match tokio::time::timeout(Duration::from_secs(1), connect(&probe)).await {
            Ok(Ok(fresh)) => fresh,
            _ => return None,
        };
        let ours = client.session_id().0;
        let sample = self.live.keys().next().cloned();
        let gone = match sample {
            None => true,
            Some(path) => match bounded(
                &self.config,
                self.config.request_timeout,
                fresh.check_stat(&path),
            )
            .await
            {
                Ok(Some(stat)) => stat.ephemeral_owner != ours,
                Ok(None) => true,
                Err(_) => false,
            },
        };
        // Ours may have reconnected meanwhile.
        (gone && client.state() == SessionState::Disconnected).then_some(fresh)
    }

    /// Puts `path` back as we registered it, unless it already is (our own writes show up as
    /// events too).
    async fn restore(&mut self, client: &Client, path: &str) {
        let Some(data) = self.live.value(path).map(<[u8]>::to_vec) else {
            return;
        };
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, client.get_data(path)).await {
            Ok(Ok((current, stat)))
                if stat.ephemeral_owner == client.session_id().0 && current == data =>
            {
                return;
            }
            Ok(Ok(_)) | Ok(Err(ZkError::NoNode)) => {}
            Ok(Err(_)) | Err(_) => {
                self.unwritten.insert(path.to_string());
                return;
            }
        }
        tracing::warn!(path, "a registration of ours was deleted or overwritten by someone else; restoring it (take instances out through the registrar, not by deleting nodes)");
        let options = CreateMode::Ephemeral.with_acls(node_acls(&self.config));
        if let Err(err) = self.create_one(client, path, &data, &options).await {
            tracing::warn!(path, error = %err, "could not restore the node yet");
            self.unwritten.insert(path.to_string());
        }
    }

    /// Creates the live nodes not written in this session (their puts failed while
    /// disconnected).
    async fn write_unwritten(&mut self, client: &Client) {
        if self.unwritten.is_empty() {
            return;
        }
        let entries: Vec<(String, Vec<u8>)> = self
            .unwritten
            .iter()
            .filter_map(|p| self.live.value(p).map(|v| (p.clone(), v.to_vec())))
            .collect();
        let results = self.create_all(client, &entries).await;
        for ((path, data), result) in entries.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.unwritten.remove(path);
                }
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    tracing::error!(path, error = %err, "ZooKeeper refuses this registration; it is dropped");
                    self.live.refused(path, data);
                    self.unwritten.remove(path);
                }
            }
        }
        self.unwritten.retain(|p| self.live.contains(p));
    }

    /// Applies `first` and every command already queued, in order: consecutive puts go out
    /// together.
    async fn apply_batch(&mut self, client: &Client, first: Command) -> Option<Step> {
        let mut batch = vec![first];
        // Registrations usually arrive together (the registrar starts them all at once): let
        // the other senders run once before taking what is queued.
        tokio::task::yield_now().await;
        while let Ok(command) = self.commands.try_recv() {
            batch.push(command);
        }
        let mut puts: Vec<PendingPut> = Vec::new();
        for command in batch {
            match command {
                Command::Put { key, value, done } => {
                    self.live.put(key.clone(), value.clone());
                    puts.push((key, value, done));
                }
                Command::Delete { key, done } => {
                    self.flush_puts(client, &mut puts).await;
                    self.unwritten.remove(&key);
                    self.live.delete(key, Some(done));
                    self.delete_doomed(client).await;
                }
                Command::Close { done } => {
                    self.flush_puts(client, &mut puts).await;
                    self.close(client).await;
                    return Some(Step::Stop(Some(done)));
                }
            }
        }
        self.flush_puts(client, &mut puts).await;
        None
    }

    async fn flush_puts(&mut self, client: &Client, puts: &mut Vec<PendingPut>) {
        if puts.is_empty() {
            return;
        }
        if client.state() != SessionState::SyncConnected {
            let err = self.disconnected();
            for (path, _, done) in puts.drain(..) {
                self.unwritten.insert(path);
                let _ = done.send(Err(err.clone()));
            }
            return;
        }
        // The same path twice in one multi-op would fail it; the last write wins anyway.
        let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (path, data, _) in puts.iter() {
            latest.insert(path.clone(), data.clone());
        }
        let entries: Vec<(String, Vec<u8>)> = latest.into_iter().collect();
        let results = self.create_all(client, &entries).await;
        let mut by_path = BTreeMap::new();
        for ((path, data), result) in entries.into_iter().zip(results) {
            match &result {
                Ok(()) => {
                    self.unwritten.remove(&path);
                }
                // Kept: written again once the connection is back.
                Err(err) if is_connection_error(err) => {
                    self.unwritten.insert(path.clone());
                }
                Err(_) => self.live.refused(&path, &data),
            }
            by_path.insert(path, result);
        }
        for (path, _, done) in puts.drain(..) {
            let result = match by_path.get(&path) {
                Some(Ok(())) | None => Ok(()),
                Some(Err(err)) => Err(err.clone()),
            };
            let _ = done.send(result);
        }
    }

    /// Deletes every node and lets the session close, within the close timeout; a disconnected
    /// session is not waited for (closing it removes its nodes, or it expires).
    async fn close(&mut self, client: &Client) {
        let limit = self.config.close_timeout;
        if client.state() == SessionState::SyncConnected {
            let paths: Vec<String> = self
                .live
                .keys()
                .cloned()
                .chain(self.live.doomed_keys())
                .collect();
            let deletes = paths.iter().map(|path| client.delete(path, None));
            if tokio::time::timeout(limit, futures_util::future::join_all(deletes))
                .await
                .is_err()
            {
                tracing::warn!(
                    ?limit,
                    "could not delete every node at close; closing the session removes them"
                );
            }
        }
        self.live.clear();
        self.set_current(None);
        tracing::info!(session = %client.session_id(), "ZooKeeper registry closed");
        // Dropping the last client sends CloseSession, which removes any ephemeral node left.
    }
}

fn finish(done: Option<oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}
