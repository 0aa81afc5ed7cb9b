//! The ZooKeeper session: one session for the process, its ephemeral nodes, and recovery (new
//! session + every live node created again) whenever the server no longer holds the session.
//!
//! One task owns the client and the live set; [`ZookeeperRegistry`](super::ZookeeperRegistry)
//! handles talk to it through a channel, so concurrent registrations are created together in
//! multi-ops. Beside it, per session: the [`Guard`]'s tasks watch our directories (anti-entropy)
//! and the [`Sentinel`] notices a session the server no longer holds. Every request the task
//! makes gives up as soon as the session disconnects ([`while_connected`]), so its loop is never
//! held up by a connection that is gone.
//!
//! Our clients are detached ([`attach`](super::client::attach)): dropping one never closes the session. The sentinel
//! may hand the task a new client on the same session while the old one is still retrying on
//! its own backoff; a non-detached old client would close the session the moment it got
//! through. So closing is explicit
//! ([`close_session`](super::client::close_session)), once the nodes are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, Error as ZkError, Permission, SessionInfo,
    SessionState, StateWatcher,
};

use super::client::{attach, close_session, terminated};
use super::config::ZookeeperConfig;
use super::error::{registry_error, request, while_connected};
use super::guard::{Guard, Seen};
use super::sentinel::{Sentinel, Verdict};
use crate::backends::kit::driver::{self, Drive, Established, Recover, RETRY_FIRST};
use crate::backends::kit::handle::{Command, Reply};
use crate::backends::kit::live::{absorb_queued, LiveSet};
use crate::backoff::Backoff;
use crate::registry::shared;
use crate::registry::{Health, RegistryError};

/// A node version no node has (versions start at 0; -1 means any).
const NO_VERSION: i32 = -2;

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

/// Splits `entries` into multi-ops of at most `max_ops` creates and `budget` bytes of paths and
/// data each (one create that alone exceeds the budget goes alone).
fn multi_ops<'a, 'b>(
    entries: &'a [&'b (String, Vec<u8>)],
    max_ops: usize,
    budget: usize,
) -> Vec<&'a [&'b (String, Vec<u8>)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (path, data)) in entries.iter().map(|e| (&e.0, &e.1)).enumerate() {
        // Each op also carries its header, flags and ACLs.
        let size = path.len() + data.len() + 64;
        if i > start && (i - start >= max_ops.max(1) || bytes + size > budget) {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').filter(|i| *i > 0).map(|i| &path[..i])
}

/// True for errors that say the connection or session is gone (as opposed to the server
/// refusing this one operation).
fn is_connection_error(err: &RegistryError) -> bool {
    err.is_transient()
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
    /// Parents created since the guard last looked: their directories are watched next.
    fresh_parents: Vec<String>,
    /// Live paths where another live session's node stands (another process advertising the
    /// same address), with that session: left alone, and ours is created once it goes (the
    /// guard sees it deleted). Never deleted by us.
    held: BTreeMap<String, i64>,
    /// The sessions this process held before the current one: a node one of them left is ours
    /// to replace.
    earlier: BTreeSet<i64>,
    /// How the next session starts.
    next: Next,
}

/// A session being served: its client, the client's states, and whether it was resumed (our
/// session on a new client) rather than new.
pub(crate) struct Live {
    client: Client,
    states: StateWatcher,
    resumed: bool,
    /// Set by a close: the session is ended by then.
    close_by: Option<Instant>,
}

/// How serving one session ended, as the session sees it (the driver hears a
/// [`driver::Step`](crate::backends::kit::driver::Step)).
enum Step {
    Lost(String),
    /// The server answers, but no longer knows our session: start over with this new one.
    Replaced(Client),
    /// The server answers and holds our session: go on with this client on it.
    Reattached(Client),
    /// Closed: end the session by this deadline.
    Stop(Option<oneshot::Sender<()>>, Instant),
}

/// How the next session starts.
enum Next {
    Connect,
    /// A new session: every live node is created in it.
    Fresh(Client),
    /// Our session on a new client: the nodes are there; only what waited is written.
    Resume(Client),
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
            fresh_parents: Vec::new(),
            held: BTreeMap::new(),
            earlier: BTreeSet::new(),
            next: Next::Connect,
        }
    }

    /// `client`'s session is given up: a node it left is ours to replace. The most recent ones
    /// are remembered (older ones have long expired).
    fn left(&mut self, client: &Client) {
        self.earlier.insert(client.session_id().0);
        while self.earlier.len() > 32 {
            self.earlier.pop_first();
        }
    }

    fn set_current(&self, info: Option<SessionInfo>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = info;
    }

    /// Connects and starts a new session: every live node is created in it.
    async fn connect(
        &mut self,
    ) -> Result<Option<(Client, StateWatcher)>, (RegistryError, Option<oneshot::Sender<()>>)> {
        let client = attach(&self.config, None)
            .await
            .map_err(|err| (err, None))?;
        self.establish_on(client).await
    }

    /// Goes on with `client`, attached to our session again: every node this session wrote is
    /// still there; every directory is watched again by the new client (and listed, so that a
    /// node lost meanwhile is seen).
    fn resume(&mut self, client: Client) -> (Client, StateWatcher) {
        let states = client.state_watcher();
        self.fresh_parents = self.parents.iter().cloned().collect();
        (client, states)
    }

    /// Ends the session after a close: the (detached) client is let go, then the session is
    /// closed by the deadline, or, while ZooKeeper is away, once it answers again (within the
    /// 1.4 × the session timeout the server may still hold it after it last heard from us).
    async fn end(&self, client: Client, deadline: Instant) {
        let info = client.session().clone();
        let connected = client.state() == SessionState::SyncConnected;
        let states = client.state_watcher();
        drop(client);
        if connected {
            // The client's task flushes and ends once every clone is dropped (the guard's and
            // sentinel's tasks are aborted with them); a new client on the session then closes it.
            let _ = tokio::time::timeout_at(deadline, terminated(states)).await;
            close_session(self.config.clone(), info, deadline).await;
        } else {
            self.close_later(info);
        }
    }

    /// Closes the session `info` in the background once ZooKeeper answers, for as long as the
    /// server may still hold it (1.4 × the session timeout): the nodes it holds go then, not
    /// when the session expires.
    fn close_later(&self, info: SessionInfo) {
        let deadline = Instant::now() + self.config.session_timeout * 7 / 5;
        tokio::spawn(close_session(self.config.clone(), info, deadline));
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
        self.fresh_parents.clear();
        self.held.clear();
        let absorbed = absorb_queued(&mut self.commands, &mut self.live);
        if let Some(done) = absorbed.close {
            let deadline = self.close(&client).await;
            self.end(client, deadline).await;
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
                // What it created is created again in the next session.
                self.left(&client);
                self.close_later(client.session().clone());
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

    fn too_large(&self, path: &str, bytes: usize) -> RegistryError {
        tracing::warn!(path, bytes, jute_max_buffer = self.config.jute_max_buffer, "registration refused: its node does not fit in one ZooKeeper request; the value registered before (if any) stays");
        RegistryError::Backend {
            backend: "zookeeper",
            source: shared(format!(
                "the node {path} would hold {bytes} bytes, more than one ZooKeeper request \
                 carries (jute.maxbuffer {} bytes, less 1 KiB for the request's header; see \
                 ZookeeperConfig::jute_max_buffer); not sent, the value registered before stays",
                self.config.jute_max_buffer
            )),
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
        let mkdirs = needed.iter().map(|dir| {
            request(client, &self.config, limit, || {
                client.mkdir(dir, &parent_options)
            })
        });
        let mut failed_dirs = BTreeMap::new();
        for (dir, result) in needed
            .iter()
            .zip(futures_util::future::join_all(mkdirs).await)
        {
            match result {
                Ok(()) => {
                    self.parents.insert(dir.clone());
                    self.fresh_parents.push(dir.clone());
                }
                Err(err) => {
                    failed_dirs.insert(dir.clone(), err);
                }
            }
        }
        let options = CreateMode::Ephemeral.with_acls(node_acls(&self.config));
        let budget = self.config.request_budget();
        // Too large to send: the server would drop the connection (registrations take this
        // path at once; a value put while no session was held may come here).
        let fits = |(path, data): &(String, Vec<u8>)| path.len() + data.len() <= budget;
        let creatable: Vec<&(String, Vec<u8>)> = entries
            .iter()
            .filter(|(path, _)| parent(path).is_none_or(|p| !failed_dirs.contains_key(p)))
            .filter(|entry| fits(entry))
            .collect();
        let chunks = multi_ops(
            &creatable,
            self.config.max_multi_ops,
            self.config.request_budget(),
        );
        let config = &self.config;
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
                    while_connected(client, config, limit, || writer.commit()).await,
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
            .map(|(path, data)| {
                if let Some(err) = parent(path).and_then(|p| failed_dirs.get(p)) {
                    return Err(err.clone());
                }
                if path.len() + data.len() > budget {
                    return Err(self.too_large(path, data.len()));
                }
                by_path.remove(path.as_str()).unwrap_or_else(|| Ok(()))
            })
            .collect()
    }

    /// Creates one ephemeral node. A node already there is ours if this session owns it (its
    /// data is updated); one left by an earlier session of ours (or a persistent one) is
    /// replaced. One that another live session holds (another process advertising the same
    /// address) is left alone: the address stays registered as long as either process lives,
    /// and ours is created when the guard sees the other go (see [`Self::hold`]).
    async fn create_one(
        &mut self,
        client: &Client,
        path: &str,
        data: &[u8],
        options: &CreateOptions<'_>,
    ) -> Result<(), RegistryError> {
        let (config, limit) = (&self.config, self.config.request_timeout);
        for _ in 0..3 {
            match while_connected(client, config, limit, || client.create(path, data, options))
                .await?
            {
                Ok(_) => {
                    self.unhold(path);
                    return Ok(());
                }
                Err(ZkError::NodeExists) => {}
                Err(err) => return Err(registry_error(config, err)),
            }
            let stat = request(client, config, limit, || client.check_stat(path)).await?;
            match stat {
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    let result =
                        request(client, config, limit, || client.set_data(path, data, None))
                            .await
                            .map(|_| ());
                    if result.is_ok() {
                        self.unhold(path);
                    }
                    return result;
                }
                Some(stat)
                    if stat.ephemeral_owner != 0
                        && !self.earlier.contains(&stat.ephemeral_owner) =>
                {
                    let owner = stat.ephemeral_owner;
                    if self.held.get(path) != Some(&owner) {
                        // Another identity's node (a wrong password is one) is refused as
                        // before; only a twin we could remove is left alone. A delete that
                        // matches no version tells which without removing anything: the server
                        // checks the parent's ACL first.
                        match while_connected(client, config, limit, || {
                            client.delete(path, Some(NO_VERSION))
                        })
                        .await?
                        {
                            Err(ZkError::BadVersion) => {}
                            // Gone meanwhile: create again.
                            Ok(()) | Err(ZkError::NoNode) => continue,
                            Err(err) => return Err(registry_error(config, err)),
                        }
                    }
                    self.hold(path, owner);
                    return Ok(());
                }
                Some(stat) => {
                    tracing::info!(
                        path,
                        owner = stat.ephemeral_owner,
                        "replacing a node left by an earlier session"
                    );
                    let version = Some(stat.version);
                    match while_connected(client, config, limit, || client.delete(path, version))
                        .await?
                    {
                        // Gone or changed meanwhile: create again.
                        Ok(()) | Err(ZkError::NoNode) | Err(ZkError::BadVersion) => {}
                        Err(err) => return Err(registry_error(config, err)),
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

    /// Another live session holds `path`: logged once per path and session, then left alone.
    fn hold(&mut self, path: &str, owner: i64) {
        if self.held.insert(path.to_string(), owner) != Some(owner) {
            tracing::warn!(
                path,
                owner = format_args!("{owner:#x}"),
                "another live ZooKeeper session holds this node (another process advertises the \
                 same address?); leaving it, the address stays registered; ours is created once \
                 that node goes"
            );
        }
    }

    /// `path` is written by us now.
    fn unhold(&mut self, path: &str) {
        if let Some(owner) = self.held.remove(path) {
            tracing::info!(
                path,
                owner = format_args!("{owner:#x}"),
                "the other session's node is gone; ours is in place"
            );
        }
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
        let mut paths = self.live.doomed_keys();
        // A node another session holds is not ours to delete: ours is simply not created.
        paths.retain(|path| {
            if self.held.remove(path).is_some() {
                self.live.deleted(path);
                false
            } else {
                true
            }
        });
        let (config, limit) = (&self.config, self.config.request_timeout);
        // Pipelined: sent together, answered in order.
        let deletes = paths
            .iter()
            .map(|path| while_connected(client, config, limit, move || client.delete(path, None)));
        let results = futures_util::future::join_all(deletes).await;
        // The connection went while the deletes were out (before the client noticed): as when
        // it was known gone, they are accepted for now and made once reconnected.
        let mut lost = None;
        for (path, result) in paths.iter().zip(results) {
            match result {
                Ok(Ok(())) | Ok(Err(ZkError::NoNode)) => self.live.deleted(path),
                Ok(Err(err)) => {
                    let refused = matches!(
                        err,
                        ZkError::NoAuth | ZkError::NotEmpty | ZkError::BadArguments(_)
                    );
                    let err = registry_error(&self.config, err);
                    if is_connection_error(&err) {
                        lost = Some(err);
                        continue;
                    }
                    self.live.delete_failed(path, &err);
                    if refused {
                        tracing::warn!(path, error = %err, "ZooKeeper refuses to delete this node; giving up on it");
                        self.live.deleted(path);
                    }
                }
                Err(err) if is_connection_error(&err) => lost = Some(err),
                Err(err) => self.live.delete_failed(path, &err),
            }
        }
        if let Some(err) = lost {
            self.live.deletes_failed(&err);
        }
    }

    /// Serves commands and watches the session until it is lost or the registry closes.
    /// `resumed`: attached again to our session after a disconnection; what waited for the
    /// connection is written first.
    async fn serve_session(
        &mut self,
        client: &Client,
        states: &mut StateWatcher,
        resumed: bool,
    ) -> Step {
        // A steady pace, not the backoff: the session's own retries are cheap and few.
        let mut retry = tokio::time::interval(RETRY_FIRST);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disconnected = resumed;
        let mut guard = Guard::new(client, &self.config);
        let (witness, witnessed) = watch::channel(None);
        let mut sentinel = Sentinel::spawn(client, &self.config, witnessed);
        loop {
            // The client's own state, not the last change seen: it may have changed between
            // connecting and now, or while this loop was busy.
            let state = client.state();
            if !self.fresh_parents.is_empty() {
                guard.cover(self.fresh_parents.drain(..));
            }
            self.show_witness(&witness);
            match state {
                SessionState::Disconnected => {
                    if !disconnected {
                        disconnected = true;
                        let _ = self.health.send(Health::Recovering {
                            attempt: 0,
                            last_error: "disconnected from ZooKeeper; reconnecting within the session timeout".into(),
                        });
                    }
                }
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    if disconnected {
                        disconnected = false;
                        // What failed while disconnected is done now, not at the next tick.
                        self.delete_doomed(client).await;
                        self.write_unwritten(client).await;
                        let _ = self.health.send(Health::Healthy);
                        continue;
                    }
                }
                // The client gives up 1.4 × the session timeout after it last heard from the
                // server, whether or not the server still holds the session. Only the server
                // answers that: the sentinel asks it as soon as it answers (a new session if the
                // session is gone, a client on it if not).
                SessionState::Expired => {
                    if !disconnected {
                        disconnected = true;
                        let _ = self.health.send(Health::Recovering {
                            attempt: 0,
                            last_error: "no answer from ZooKeeper for longer than the session \
                                         timeout; asking it whether it still holds the session"
                                .into(),
                        });
                    }
                }
                SessionState::AuthFailed => return Step::Lost("authentication failed".into()),
                SessionState::Closed => return Step::Lost("the session was closed".into()),
            }
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        let deadline = self.close(client).await;
                        return Step::Stop(None, deadline);
                    };
                    if let Some(step) = self.apply_batch(client, command).await {
                        return step;
                    }
                }
                // Read again at the top of the loop.
                _ = states.changed() => {}
                seen = guard.next() => match seen {
                    Seen::Changed(path) => {
                        if self.live.contains(&path) && !self.unwritten.contains(&path) {
                            self.restore(client, &path).await;
                        }
                    }
                    // Nodes of ours missing from a directory just watched: deleted before the
                    // watch was in place (rare; each is checked and put back).
                    Seen::Listed { dir, children } => {
                        let prefix = format!("{dir}/");
                        let missing: Vec<String> = self
                            .live
                            .keys_with_prefix(&prefix)
                            .filter(|key| {
                                let name = &key[prefix.len()..];
                                !name.contains('/')
                                    && !children.iter().any(|child| child == name)
                                    && !self.unwritten.contains(*key)
                            })
                            .cloned()
                            .collect();
                        for path in missing {
                            self.restore(client, &path).await;
                        }
                    }
                },
                verdict = sentinel.verdict() => match verdict {
                    Verdict::Replaced(fresh) => return Step::Replaced(fresh),
                    Verdict::Reattached(again) => return Step::Reattached(again),
                },
                _ = retry.tick(), if !disconnected && (self.live.has_doomed() || !self.unwritten.is_empty()) => {
                    self.delete_doomed(client).await;
                    self.write_unwritten(client).await;
                }
            }
        }
    }

    /// Tells the sentinel which node shows that this session still holds our registrations: one
    /// it wrote and keeps (`None` while there is none).
    fn show_witness(&self, witness: &watch::Sender<Option<String>>) {
        let sample = self
            .live
            .keys()
            .find(|k| !self.unwritten.contains(*k) && !self.held.contains_key(*k));
        witness.send_if_modified(|shown| {
            if shown.as_ref() == sample {
                return false;
            }
            *shown = sample.cloned();
            true
        });
    }

    /// Puts `path` back as we registered it, unless it already is (our own writes show up as
    /// events too).
    async fn restore(&mut self, client: &Client, path: &str) {
        let Some(data) = self.live.value(path).cloned() else {
            return;
        };
        let limit = self.config.request_timeout;
        let held = self.held.get(path).copied();
        match while_connected(client, &self.config, limit, || client.get_data(path)).await {
            Ok(Ok((current, stat)))
                if stat.ephemeral_owner == client.session_id().0 && current == data =>
            {
                return;
            }
            // The other process's node changed: still its, still left alone.
            Ok(Ok((_, stat))) if held == Some(stat.ephemeral_owner) => return,
            // The other process's node is gone: ours now.
            Ok(Err(ZkError::NoNode)) if held.is_some() => {
                let options = CreateMode::Ephemeral.with_acls(node_acls(&self.config));
                if let Err(err) = self.create_one(client, path, &data, &options).await {
                    tracing::warn!(path, error = %err, "could not create the node yet");
                    self.unwritten.insert(path.to_string());
                }
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
                    // Would cost the connection (the server drops it) and be refused again at
                    // every reconnect: refused now, and the value registered before stays.
                    if key.len() + value.len() > self.config.request_budget() {
                        let _ = done.send(Err(self.too_large(&key, value.len())));
                        continue;
                    }
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
                    let deadline = self.close(client).await;
                    return Some(Step::Stop(Some(done), deadline));
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

    /// Deletes every node within the close timeout; a disconnected session is not waited for
    /// (closing it removes its nodes, or it expires). Returns the deadline for closing the
    /// session.
    async fn close(&mut self, client: &Client) -> Instant {
        let limit = self.config.close_timeout;
        let deadline = Instant::now() + limit;
        if client.state() == SessionState::SyncConnected {
            let paths: Vec<String> = self
                .live
                .keys()
                .cloned()
                .chain(self.live.doomed_keys())
                .filter(|path| !self.held.contains_key(path))
                .collect();
            let deletes = paths.iter().map(|path| {
                while_connected(client, &self.config, limit, move || {
                    client.delete(path, None)
                })
            });
            let results = futures_util::future::join_all(deletes).await;
            if results.iter().any(Result::is_err) {
                tracing::warn!(
                    ?limit,
                    "could not delete every node at close; closing the session removes them"
                );
            }
        }
        self.live.clear();
        self.set_current(None);
        tracing::info!(session = %client.session_id(), "ZooKeeper registry closed");
        // Closing the session next removes any ephemeral node left.
        deadline
    }
}

impl Drive for Session {
    type Key = String;
    type Value = Vec<u8>;
    type Conn = Live;
    type Error = RegistryError;

    const ESTABLISH: &'static str = "establish a ZooKeeper session";
    const RESET_ON_ESTABLISH: bool = true;

    fn backoff(&self) -> Backoff {
        self.config.backoff.clone()
    }

    fn health(&self) -> &watch::Sender<Health> {
        &self.health
    }

    fn queue(&mut self) -> (&mut mpsc::UnboundedReceiver<Command>, &mut LiveSet) {
        (&mut self.commands, &mut self.live)
    }

    async fn establish(&mut self) -> Result<Established<Live>, RegistryError> {
        let (established, resumed) = match std::mem::replace(&mut self.next, Next::Connect) {
            Next::Fresh(client) => (self.establish_on(client).await, false),
            Next::Resume(client) => (Ok(Some(self.resume(client))), true),
            Next::Connect => (self.connect().await, false),
        };
        match established {
            Ok(Some((client, states))) => Ok(Established::Up(Live {
                client,
                states,
                resumed,
                close_by: None,
            })),
            Ok(None) => Ok(Established::Closed(None)),
            Err((err, None)) => Err(err),
            Err((_, Some(done))) => Ok(Established::Closed(Some(done))),
        }
    }

    fn up(&mut self, live: &Live) {
        let client = &live.client;
        self.set_current(Some(client.session().clone()));
        if live.resumed {
            tracing::info!(session = %client.session_id(), nodes = self.live.len(), "ZooKeeper still holds our session; attached to it again");
        } else {
            let _ = self.health.send(Health::Healthy);
            tracing::info!(session = %client.session_id(), nodes = self.live.len(), "ZooKeeper session established; registrations live");
        }
    }

    async fn serve(&mut self, live: &mut Live) -> driver::Step {
        match self
            .serve_session(&live.client, &mut live.states, live.resumed)
            .await
        {
            Step::Stop(done, deadline) => {
                live.close_by = Some(deadline);
                driver::Step::Stop(done)
            }
            Step::Replaced(new) => {
                self.left(&live.client);
                tracing::warn!(session = %live.client.session_id(), "ZooKeeper answers but no longer holds our session (restarted without its data?); starting a new one now");
                self.next = Next::Fresh(new);
                self.set_current(None);
                driver::Step::Again
            }
            Step::Reattached(new) => {
                self.next = Next::Resume(new);
                driver::Step::Again
            }
            Step::Lost(cause) => driver::Step::Lost(cause),
        }
    }

    fn lost(&mut self, live: Live, cause: &str, _lived: Duration) -> Recover {
        self.left(&live.client);
        tracing::warn!(session = %live.client.session_id(), %cause, "ZooKeeper session lost; starting a new one");
        self.set_current(None);
        Recover::Now
    }

    async fn stopped(&mut self, live: Live) {
        let deadline = live
            .close_by
            .unwrap_or_else(|| Instant::now() + self.config.close_timeout);
        self.end(live.client, deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, bytes: usize) -> (String, Vec<u8>) {
        (path.to_string(), vec![b'x'; bytes])
    }

    #[test]
    fn multi_ops_fit_in_count_and_bytes() {
        let entries: Vec<(String, Vec<u8>)> =
            (0..10).map(|i| entry(&format!("/s/{i}"), 100)).collect();
        let refs: Vec<&(String, Vec<u8>)> = entries.iter().collect();
        let sizes =
            |chunks: Vec<&[&(String, Vec<u8>)]>| chunks.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(multi_ops(&refs, 4, usize::MAX)), [4, 4, 2]);
        // 100 + 4 + 64 = 168 bytes each: 3 fit in 600.
        assert_eq!(sizes(multi_ops(&refs, 1000, 600)), [3, 3, 3, 1]);
        let big = [entry("/s/big", 1000), entry("/s/a", 1)];
        let refs: Vec<&(String, Vec<u8>)> = big.iter().collect();
        assert_eq!(sizes(multi_ops(&refs, 1000, 600)), [1, 1]);
        assert!(multi_ops(&[], 10, 10).is_empty());
    }
}
