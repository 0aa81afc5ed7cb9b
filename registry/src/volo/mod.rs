//! Volo (cloudwego/volo) integration, behind the cargo feature `volo`.
//!
//! - Client: [`VoloDiscover`] is Volo's `Discover` over any [`Discovery`](crate::Discovery)
//!   (memory, etcd, ZooKeeper, Nacos, [`MergedDiscovery`](crate::MergedDiscovery)), answered
//!   from a live watch; [`VoloBalance`] is Volo's `LoadBalance` backed by this crate's
//!   [`Balancer`](crate::balance::Balancer) (warm-up, tag filters, outlier ejection through
//!   [`ReportLayer`], zones, subsets, and lanes: a call carries its [`Lane`] in the callee's
//!   tags); retries on another instance through Volo's `retry_count` (volo-thrift;
//!   volo-grpc 0.12's load-balance layer makes one attempt per call and has no retry count).
//! - Server: a volo-grpc server passes [`grpc_shutdown`] to `run_with_shutdown`; a volo-thrift
//!   server, which handles signals itself, registers the hook of [`thrift_shutdown`]. Either
//!   way the [`Registrar`](crate::Registrar) registers every `#[service]` once the server
//!   listens and, on SIGTERM, deregisters first, drains, then lets the server stop.
//!
//! A volo-grpc client:
//!
//! ```text
//! let discover = VoloDiscover::new(EtcdDiscovery::new(EtcdConfig::from_env()?));
//! let balance = VoloBalance::default();
//! let client = GreeterClientBuilder::new("example.volo.greeter")
//!     .load_balance(balance.clone())
//!     .discover(discover)
//!     .layer_inner(ReportLayer::new(balance))
//!     .build();
//! ```
//!
//! A volo-thrift client takes the same, plus `.retry_count(n)` (its default balancer works
//! over `DummyDiscover`, which finds nothing, so it needs both `load_balance` and `discover`).

mod balance;
mod convert;
mod discover;
mod keyed;
mod keys;
mod lane;
mod picker;
mod report;
mod server;

pub use balance::{VoloBalance, DEFAULT_WAIT_FOR_INSTANCE};
pub use convert::{START_TIME_TAG, WARMUP_TAG};
pub use discover::{VoloDiscover, VoloDiscoverError, DEFAULT_CHANNEL_CAPACITY};
pub use lane::Lane;
pub use picker::Picker;
pub use report::{ReportLayer, Reporting};
pub use server::{grpc_shutdown, thrift_shutdown, HookFuture, ThriftHook, ThriftSignal};
