//! The ZooKeeper session: one session for the process, its ephemeral nodes, and recovery (new
//! session + every live node created again) whenever the session expires or is lost.
//!
//! One task owns the client; [`ZookeeperRegistry`](super::ZookeeperRegistry) handles talk to it
//! through a channel, so concurrent registrations are created together in multi-ops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, Error as ZkError, Permission, SessionInfo,
    SessionState,
};

use super::config::ZookeeperConfig;
use super::error::{bounded, registry_error, timed_out};
use crate::backends::session::{wait_offline, Command, Reply};
use crate::registry::{Health, RegistryError};

/// A put waiting for the next multi-op: path, data, reply.
type PendingPut = (String, Vec<u8>, Reply);

/// The creator gets every permission, everyone else may read.
static PROTECTED: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

fn acls(config: &ZookeeperConfig) -> Acls<'static> {
    if config.auth.is_some() {
        Acls::new(&PROTECTED)
    } else {
        // What Kitex uses without auth: world ALL.
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

pub(crate) struct Session {
    config: ZookeeperConfig,
    /// Every registration this process holds: path → data. Created again in every new session.
    live: BTreeMap<String, Vec<u8>>,
    health: watch::Sender<Health>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The current session's id and password, for operators and tests.
    current: Arc<Mutex<Option<SessionInfo>>>,
    /// Parent paths known to exist in this session.
    parents: BTreeSet<String>,
}

enum Step {
    Lost(String),
    Stop,
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
            live: BTreeMap::new(),
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
        loop {
            match self.establish().await {
                Ok(client) => {
                    backoff.reset();
                    failures = 0;
                    self.set_current(Some(client.session().clone()));
                    let _ = self.health.send(Health::Healthy);
                    tracing::info!(session = %client.session_id(), nodes = self.live.len(), "ZooKeeper session established; registrations live");
                    match self.serve(&client).await {
                        Step::Stop => return,
                        Step::Lost(cause) => {
                            tracing::warn!(session = %client.session_id(), %cause, "ZooKeeper session lost; starting a new one");
                            self.set_current(None);
                            let _ = self.health.send(Health::Recovering {
                                attempt: 0,
                                last_error: cause,
                            });
                        }
                    }
                }
                Err(err) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(attempt = failures, error = %err, retry_in = ?delay, "cannot establish a ZooKeeper session");
                    let _ = self.health.send(Health::Recovering {
                        attempt: failures,
                        last_error: err.to_string(),
                    });
                    if wait_offline(&mut self.commands, &mut self.live, delay, &err).await {
                        return;
                    }
                }
            }
        }
    }

    /// Connects a new session and creates every live node in it.
    async fn establish(&mut self) -> Result<Client, RegistryError> {
        let client = connect(&self.config).await?;
        self.parents.clear();
        let entries: Vec<(String, Vec<u8>)> = self
            .live
            .iter()
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        for result in self.create_all(&client, &entries).await {
            result?;
        }
        Ok(client)
    }

    /// Creates `entries` as ephemeral nodes: parents first, then one multi-op per
    /// `max_multi_ops` nodes; a failed multi-op falls back to node-by-node creation.
    async fn create_all(
        &mut self,
        client: &Client,
        entries: &[(String, Vec<u8>)],
    ) -> Vec<Result<(), RegistryError>> {
        let limit = self.config.request_timeout;
        let parent_acls = acls(&self.config);
        let parent_options = CreateMode::Persistent.with_acls(parent_acls);
        let needed: BTreeSet<String> = entries
            .iter()
            .filter_map(|(path, _)| parent(path).map(str::to_string))
            .filter(|p| !self.parents.contains(p))
            .collect();
        // Parents and multi-ops are pipelined: sent together, answered in order.
        let mkdirs = needed
            .iter()
            .map(|dir| bounded(&self.config, limit, client.mkdir(dir, &parent_options)));
        for (dir, result) in needed
            .iter()
            .zip(futures_util::future::join_all(mkdirs).await)
        {
            match result {
                Ok(()) => {
                    self.parents.insert(dir.clone());
                }
                Err(err) => return entries.iter().map(|_| Err(err.duplicate())).collect(),
            }
        }
        let options = CreateMode::Ephemeral.with_acls(acls(&self.config));
        let chunks: Vec<&[(String, Vec<u8>)]> =
            entries.chunks(self.config.max_multi_ops.max(1)).collect();
        let commits = chunks.iter().map(|chunk| {
            let options = &options;
            async move {
                let mut writer = client.new_multi_writer();
                for (path, data) in chunk.iter() {
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
        let mut results = Vec::with_capacity(entries.len());
        for (chunk, committed) in chunks.into_iter().zip(committed) {
            if committed {
                results.extend(chunk.iter().map(|_| Ok(())));
                continue;
            }
            // Some node exists already (ours from this session, or left by an earlier one):
            // create one by one, replacing what must be replaced.
            for (path, data) in chunk {
                results.push(self.create_one(client, path, data, &options).await);
            }
        }
        results
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
            source: format!("{path} keeps being recreated by another session").into(),
        })
    }

    /// Serves commands and watches the session until it is lost or the registry closes.
    async fn serve(&mut self, client: &Client) -> Step {
        let mut states = client.state_watcher();
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.close(client).await;
                        return Step::Stop;
                    };
                    if let Some(step) = self.apply_batch(client, command).await {
                        return step;
                    }
                }
                state = states.changed() => match state {
                    SessionState::Disconnected => {
                        let _ = self.health.send(Health::Recovering {
                            attempt: 0,
                            last_error: "disconnected from ZooKeeper; reconnecting within the session timeout".into(),
                        });
                    }
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        let _ = self.health.send(Health::Healthy);
                    }
                    SessionState::Expired => return Step::Lost("the session expired".into()),
                    SessionState::AuthFailed => return Step::Lost("authentication failed".into()),
                    SessionState::Closed => return Step::Lost("the session was closed".into()),
                },
            }
        }
    }

    /// Applies `first` and every command already queued: consecutive puts go out together.
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
            if let Command::Put { key, value, done } = command {
                puts.push((key, value, done));
                continue;
            }
            self.flush_puts(client, &mut puts).await;
            match command {
                Command::Delete { key: path, done } => {
                    self.live.remove(&path);
                    let limit = self.config.request_timeout;
                    let result = match tokio::time::timeout(limit, client.delete(&path, None)).await
                    {
                        Ok(Ok(())) | Ok(Err(ZkError::NoNode)) => Ok(()),
                        Ok(Err(err)) => Err(registry_error(&self.config, err)),
                        Err(_) => Err(timed_out(&self.config, limit)),
                    };
                    let _ = done.send(result);
                }
                Command::Close { done } => {
                    self.close(client).await;
                    let _ = done.send(());
                    return Some(Step::Stop);
                }
                Command::Put { .. } => {}
            }
        }
        self.flush_puts(client, &mut puts).await;
        None
    }

    async fn flush_puts(&mut self, client: &Client, puts: &mut Vec<PendingPut>) {
        if puts.is_empty() {
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
            if result.is_ok() {
                self.live.insert(path.clone(), data);
            }
            by_path.insert(path, result);
        }
        for (path, _, done) in puts.drain(..) {
            let result = match by_path.get(&path) {
                Some(Ok(())) => Ok(()),
                Some(Err(err)) => Err(err.duplicate()),
                None => Ok(()),
            };
            let _ = done.send(result);
        }
    }

    /// Deletes every node (best effort) and lets the session close.
    async fn close(&mut self, client: &Client) {
        for path in std::mem::take(&mut self.live).into_keys() {
            if let Err(err) = bounded(
                &self.config,
                self.config.request_timeout,
                client.delete(&path, None),
            )
            .await
            {
                tracing::debug!(path, error = %err, "could not delete a node at close; closing the session removes it");
            }
        }
        self.set_current(None);
        tracing::info!(session = %client.session_id(), "ZooKeeper registry closed");
        // Dropping the last client sends CloseSession, which removes any ephemeral node left.
    }
}
