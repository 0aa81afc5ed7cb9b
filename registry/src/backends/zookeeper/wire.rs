//! The ZooKeeper path and data, exactly as Kitex's `registry-zookeeper` writes and reads them.
//!
//! Path: `{root}/{service}/{host}:{port}` (root empty by default; IPv6 hosts bracketed, which is
//! also what Kitex's resolver parses with `net.SplitHostPort`). Data: Go's default JSON of
//! `RegistryEntity { Weight int; Tags map[string]string }`, nothing more. The instance's start
//! time is the node's creation time (`ctime`), which ZooKeeper records for every node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::discovery::Instance;
use crate::info::{weight_or_default, Info};

#[derive(Debug, Serialize, Deserialize)]
struct Entity {
    #[serde(rename = "Weight", default)]
    weight: i64,
    #[serde(rename = "Tags", default)]
    tags: Option<BTreeMap<String, String>>,
}

/// `{root}/{service}`.
pub(crate) fn service_path(root: &str, service: &str) -> String {
    format!("{}/{service}", root.trim_end_matches('/'))
}

/// `{root}/{service}/{host}:{port}`.
pub(crate) fn path(root: &str, info: &Info) -> String {
    format!("{}/{}", service_path(root, &info.service_name), info.addr)
}

/// The node data for `info`.
pub(crate) fn encode(info: &Info) -> Vec<u8> {
    let entity = Entity {
        weight: i64::from(info.weight),
        tags: Some(info.tags.clone()),
    };
    // Serializing integers and string maps cannot fail.
    serde_json::to_vec(&entity).unwrap_or_default()
}

/// Why a child node was left out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("node name `{0}` is not host:port")]
    Name(String),
    #[error("node data is not Kitex RegistryEntity JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses a node name: `1.2.3.4:80`, `[fd00::1]:80`, or Kitex's unbracketed `fd00::1:80`.
fn parse_name(name: &str) -> Option<SocketAddr> {
    if let Ok(addr) = name.parse() {
        return Some(addr);
    }
    let (host, port) = name.rsplit_once(':')?;
    Some(SocketAddr::new(
        host.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

/// Reads a child node written by Kitex (Go) or by us; `ctime_ms` is the node's creation time.
pub(crate) fn decode(name: &str, data: &[u8], ctime_ms: i64) -> Result<Instance, DecodeError> {
    let addr = parse_name(name).ok_or_else(|| DecodeError::Name(name.to_string()))?;
    let entity: Entity = serde_json::from_slice(data)?;
    let weight = weight_or_default(entity.weight);
    Ok(Instance {
        addr,
        weight,
        tags: entity.tags.unwrap_or_default(),
        start_time: u64::try_from(ctime_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        warmup: Duration::ZERO,
        payload_codec: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::DEFAULT_WEIGHT;

    fn info() -> Info {
        let mut info = Info::new("echo", "10.0.0.7:8888".parse().unwrap());
        info.tags.insert("idc".into(), "xxx".into());
        info
    }

    #[test]
    fn path_and_data_match_kitex() {
        assert_eq!(path("", &info()), "/echo/10.0.0.7:8888");
        assert_eq!(path("/kitex/", &info()), "/kitex/echo/10.0.0.7:8888");
        let mut v6 = info();
        v6.addr = "[fd00::1]:8080".parse().unwrap();
        assert_eq!(path("", &v6), "/echo/[fd00::1]:8080");
        assert_eq!(encode(&info()), br#"{"Weight":10,"Tags":{"idc":"xxx"}}"#);
    }

    #[test]
    fn reads_what_kitex_writes() {
        // Literal data as Go's encoding/json writes Kitex's RegistryEntity.
        let a = decode(
            "10.0.0.7:8888",
            br#"{"Weight":10,"Tags":{"idc":"xxx"}}"#,
            1_700_000_000_000,
        )
        .unwrap();
        assert_eq!((a.weight, a.tags["idc"].as_str()), (10, "xxx"));
        assert_eq!(
            a.start_time,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );
        let b = decode("10.0.0.7:8888", br#"{"Weight":0,"Tags":null}"#, 0).unwrap();
        assert_eq!(
            (b.weight, b.tags.len(), b.start_time),
            (DEFAULT_WEIGHT, 0, None)
        );
        let c = decode("fd00::1:8080", br#"{"Weight":3,"Tags":{},"Extra":1}"#, 0).unwrap();
        assert_eq!(c.addr, "[fd00::1]:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(
            decode("[fd00::1]:8080", br#"{"Weight":3}"#, 0)
                .unwrap()
                .weight,
            3
        );
    }

    #[test]
    fn rejects_malformed_nodes() {
        assert!(decode("nohost", br#"{"Weight":1}"#, 0).is_err());
        assert!(decode("1.2.3.4:80", b"garbage", 0).is_err());
    }
}
