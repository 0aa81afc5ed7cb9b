//! The fault-injection features of the server fixtures: freezing etcd and ZooKeeper, etcd flags
//! that shrink its limits, a ZooKeeper ensemble that loses its leader, and a wiped ZooKeeper.

#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use etcd_client::{Txn, TxnOp};
    use tests::fixtures::etcd::{Etcd, EtcdOptions};
    use tests::poll;

    #[tokio::test]
    async fn freeze_makes_a_get_time_out_and_thaw_makes_it_answer() {
        let mut etcd = Etcd::start().await;
        let mut client = etcd.client().await;
        client.put("k", "v", None).await.unwrap();

        etcd.freeze();
        assert!(etcd.members[0].frozen());
        let get = tokio::time::timeout(Duration::from_secs(1), client.get("k", None)).await;
        assert!(get.is_err(), "a frozen etcd answered: {get:?}");

        etcd.thaw();
        assert!(!etcd.members[0].frozen());
        let value = poll::until(Duration::from_secs(5), "a get after thaw", || async {
            let mut client = etcd.client().await;
            let response = tokio::time::timeout(Duration::from_secs(1), client.get("k", None))
                .await
                .ok()?
                .ok()?;
            Some(response.kvs()[0].value_str().unwrap().to_string())
        })
        .await;
        assert_eq!(value, "v");
    }

    #[tokio::test]
    async fn a_frozen_member_is_thawed_and_killed_on_drop() {
        let mut etcd = Etcd::start().await;
        let pid = etcd.members[0].pid();
        etcd.freeze();
        drop(etcd);
        // `kill -0` fails once the process is gone (it was reaped by the fixture).
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(!alive, "etcd {pid} is still there after drop");
    }

    #[tokio::test]
    async fn max_txn_ops_rejects_a_bigger_txn() {
        let etcd = Etcd::start_with(EtcdOptions {
            members: 1,
            extra_args: vec!["--max-txn-ops=4".into()],
            ..Default::default()
        })
        .await;
        let mut client = etcd.client().await;
        let puts = |n: usize| {
            Txn::new().and_then(
                (0..n)
                    .map(|i| TxnOp::put(format!("k{i}"), "v", None))
                    .collect::<Vec<_>>(),
            )
        };
        client.txn(puts(4)).await.expect("4 ops are allowed");
        let err = client
            .txn(puts(5))
            .await
            .expect_err("5 ops exceed the limit");
        assert!(
            err.to_string()
                .contains("too many operations in txn request"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn kill_and_restart_one_member() {
        let mut etcd = Etcd::start().await;
        let mut client = etcd.client().await;
        client.put("k", "v", None).await.unwrap();
        etcd.kill_member(0);
        assert!(!etcd.members[0].running());
        etcd.restart_member(0).await;
        let mut client = etcd.client().await;
        let response = client.get("k", None).await.unwrap();
        assert_eq!(response.kvs()[0].value_str().unwrap(), "v");
    }
}

#[cfg(feature = "zookeeper")]
mod zookeeper {
    use std::time::Duration;

    use tests::fixtures::zookeeper::ZooKeeper;
    use tests::poll;
    use zookeeper_client::{Acls, CreateMode};

    #[tokio::test]
    async fn ensemble_elects_a_leader_and_survives_losing_it() {
        let mut ensemble = ZooKeeper::start_ensemble(3).await;
        assert_eq!(ensemble.connect_string().split(',').count(), 3);
        let leader = ensemble.leader().await;
        let modes = ensemble.modes().await;
        assert_eq!(
            modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count(),
            2,
            "{modes:?}"
        );
        let client = ensemble.client().await;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.create("/before", b"1", &persistent).await.unwrap();

        ensemble.kill(leader);
        poll::until(
            Duration::from_secs(20),
            "a write after the leader was killed",
            || async {
                let client = tokio::time::timeout(Duration::from_secs(3), ensemble.client())
                    .await
                    .ok()?;
                let create = client.create("/after", b"2", &persistent);
                tokio::time::timeout(Duration::from_secs(3), create)
                    .await
                    .ok()?
                    .ok()
                    .map(drop)
            },
        )
        .await;
        let new_leader = ensemble.leader().await;
        assert_ne!(new_leader, leader, "the killed server cannot lead");

        ensemble.restart(leader).await;
        let client = ensemble.client().await;
        assert_eq!(client.get_data("/before").await.unwrap().0, b"1");
        assert_eq!(client.get_data("/after").await.unwrap().0, b"2");
    }

    #[tokio::test]
    async fn wipe_and_restart_serves_an_empty_tree() {
        let mut zk = ZooKeeper::start().await;
        let client = zk.client(None).await;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.create("/kept", b"x", &persistent).await.unwrap();
        drop(client);

        zk.stop();
        zk.wipe();
        zk.restart().await;
        let client = zk.client(None).await;
        assert_eq!(client.check_stat("/kept").await.unwrap(), None);
        assert_eq!(client.list_children("/").await.unwrap(), vec!["zookeeper"]);
    }

    #[tokio::test]
    async fn freeze_stops_answers_and_thaw_restores_them() {
        let mut zk = ZooKeeper::start().await;
        let client = zk.client(None).await;
        zk.freeze();
        let read = tokio::time::timeout(Duration::from_secs(1), client.list_children("/")).await;
        assert!(read.is_err(), "a frozen ZooKeeper answered: {read:?}");
        zk.thaw();
        poll::until(Duration::from_secs(5), "a read after thaw", || async {
            tokio::time::timeout(Duration::from_secs(1), client.list_children("/"))
                .await
                .ok()?
                .ok()
        })
        .await;
    }
}
