//! The reliability campaign against real etcd, ZooKeeper and Nacos (r-nacos) servers on
//! loopback.
//!
//! ```text
//! cargo build --release -p examples --features etcd,zookeeper --examples   # for `sigkill`
//! cargo run --release -p tests --features etcd,zookeeper,nacos --bin campaign -- [--quick] [--only a,b]
//! ```
//!
//! Prints one section per scenario on stdout (progress goes to stderr) and exits 1 when a
//! must-be-zero counter is not 0 or a scenario could not finish, 2 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use tests::campaign::{run, Options, Scenario};

// The shutdown scenario registers `linked.alpha`, defined in this library.
use linked_services as _;

const USAGE: &str = "\
usage: campaign [--quick] [--only SCENARIO,...] [--seed N] [--examples-dir DIR] [--quiet]
                [--etcd-restarts N] [--member-kills N] [--zk-leader-kills N] [--zk-expiries N]
                [--zk-restarts-kept N] [--zk-restarts-wiped N] [--nacos-restarts N]
                [--nacos-big-service N] [--sigkills N]
                [--shutdown-rounds N] [--services N] [--watchers N] [--fanout-rounds N]
                [--changes N] [--traffic-window-secs N] [--list]

--quick uses tiny counts (as the CI test does); counts given after it override them.
RUST_LOG=service_registry=debug logs the library to stderr.";

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut options = if args.iter().any(|a| a == "--quick") {
        Options::quick()
    } else {
        Options::full()
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let mut number = |name: &str| -> Result<usize, String> {
            let v = value(name)?;
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        match arg.as_str() {
            "--quick" => {}
            "--quiet" => options.progress = false,
            "--list" => {
                for scenario in Scenario::ALL {
                    println!("{:<18} {}", scenario.id(), scenario.title());
                }
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--only" => {
                let list = value("--only")?;
                options.scenarios = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|id| {
                        Scenario::from_id(id)
                            .ok_or_else(|| format!("unknown scenario `{id}` (see --list)"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--seed" => options.seed = number("--seed")? as u64,
            "--examples-dir" => options.examples_dir = Some(value("--examples-dir")?.into()),
            "--etcd-restarts" => options.etcd_restarts = number(&arg)?,
            "--member-kills" => options.member_kills = number(&arg)?,
            "--zk-leader-kills" => options.zk_leader_kills = number(&arg)?,
            "--zk-expiries" => options.zk_expiries = number(&arg)?,
            "--zk-restarts-kept" => options.zk_restarts_kept = number(&arg)?,
            "--zk-restarts-wiped" => options.zk_restarts_wiped = number(&arg)?,
            "--nacos-restarts" => options.nacos_restarts = number(&arg)?,
            "--nacos-big-service" => options.nacos_big_service = number(&arg)?,
            "--sigkills" => options.sigkills = number(&arg)?,
            "--shutdown-rounds" => options.shutdown_rounds = number(&arg)?,
            "--services" => options.load_services = number(&arg)?,
            "--watchers" => options.watchers = number(&arg)?,
            "--fanout-rounds" => options.fanout_rounds = number(&arg)?,
            "--changes" => options.memory_changes = number(&arg)?,
            "--traffic-window-secs" => {
                options.traffic_window = Duration::from_secs(number(&arg)? as u64)
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(options))
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("campaign: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "reliability campaign: {} scenario(s), seed {}{}\n",
        options.scenarios.len(),
        options.seed,
        if options.etcd_restarts == Options::quick().etcd_restarts {
            " (quick counts)"
        } else {
            ""
        }
    );
    let report = run(&options, |section| println!("{}", section.render())).await;
    print!("{}", report.summary());
    if report.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
