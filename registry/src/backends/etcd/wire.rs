//! The etcd key and value, exactly as Kitex's `registry-etcd` writes and reads them.
//!
//! Key: `{prefix}/{service}/{host}:{port}` (IPv6 hosts bracketed). Value: JSON with Kitex's four
//! fields `network`, `address`, `weight`, `tags`, plus fields Kitex's Go decoder ignores:
//! `payload_codec`, `start_time_ms` (Unix milliseconds) and `warmup_ms`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::discovery::Instance;
use crate::info::{weight_or_default, Info};

/// Kitex's default key prefix.
pub const DEFAULT_PREFIX: &str = "kitex/registry-etcd";

/// The JSON value. Field names and types of the first four are Kitex's `instanceInfo`.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    network: String,
    address: String,
    weight: i64,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_codec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warmup_ms: Option<u64>,
}

/// `{prefix}/{service}/`: every instance key of `service` starts with it.
pub(crate) fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{}/{service}/", prefix.trim_end_matches('/'))
}

/// `{prefix}/{service}/{host}:{port}`.
pub(crate) fn key(prefix: &str, info: &Info) -> String {
    format!(
        "{}{}",
        service_prefix(prefix, &info.service_name),
        info.addr
    )
}

/// The JSON value for `info`.
pub(crate) fn encode(info: &Info) -> String {
    let value = Value {
        network: "tcp".to_string(),
        address: info.addr.to_string(),
        weight: i64::from(info.weight),
        tags: Some(info.tags.clone()),
        payload_codec: info.payload_codec.clone(),
        start_time_ms: info
            .start_time
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64),
        warmup_ms: (!info.warmup.is_zero()).then_some(info.warmup.as_millis() as u64),
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&value).unwrap_or_default()
}

/// Why a stored value was left out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value is not Kitex instance JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("address `{0}` is not ip:port")]
    Address(String),
}

/// Reads a value written by Kitex (Go) or by us. Weight ≤ 0 reads as the default weight.
pub(crate) fn decode(bytes: &[u8]) -> Result<Instance, DecodeError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let addr: SocketAddr = value
        .address
        .parse()
        .map_err(|_| DecodeError::Address(value.address.clone()))?;
    let weight = weight_or_default(value.weight);
    Ok(Instance {
        addr,
        weight,
        tags: value.tags.unwrap_or_default(),
        start_time: value
            .start_time_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        warmup: Duration::from_millis(value.warmup_ms.unwrap_or(0)),
        payload_codec: value.payload_codec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{DEFAULT_WEIGHT, MAX_WEIGHT};

    fn info() -> Info {
        let mut info = Info::new("echo", "10.0.0.7:8888".parse().unwrap());
        info.tags.insert("idc".into(), "xxx".into());
        info.start_time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        info
    }

    #[test]
    fn key_matches_kitex() {
        assert_eq!(
            key(DEFAULT_PREFIX, &info()),
            "kitex/registry-etcd/echo/10.0.0.7:8888"
        );
        let mut v6 = info();
        v6.addr = "[fd00::1]:8080".parse().unwrap();
        assert_eq!(
            key("hertz/registry-etcd/", &v6),
            "hertz/registry-etcd/echo/[fd00::1]:8080"
        );
    }

    #[test]
    fn value_starts_with_kitex_fields_in_kitex_order() {
        assert_eq!(
            encode(&info()),
            r#"{"network":"tcp","address":"10.0.0.7:8888","weight":10,"tags":{"idc":"xxx"},"start_time_ms":1700000000123}"#
        );
    }

    #[test]
    fn reads_what_kitex_writes() {
        // Literal values as Go's encoding/json writes Kitex's instanceInfo.
        let cases: [(&[u8], u32, usize); 6] = [
            (br#"{"network":"tcp","address":"10.0.0.7:8888","weight":10,"tags":{"idc":"xxx"}}"#, 10, 1),
            (br#"{"network":"tcp","address":"10.0.0.7:8888","weight":0,"tags":null}"#, DEFAULT_WEIGHT, 0),
            (br#"{"network":"tcp","address":"10.0.0.7:8888","weight":30}"#, 30, 0),
            (br#"{"network":"tcp","address":"[fd00::1]:8888","weight":-3,"tags":{},"extra":[1,2]}"#, DEFAULT_WEIGHT, 0),
            (br#"{"network":"tcp","address":"10.0.0.7:8888","weight":4294967295}"#, MAX_WEIGHT, 0),
            (br#"{"network":"tcp","address":"10.0.0.7:8888","weight":9223372036854775807}"#, MAX_WEIGHT, 0),
        ];
        for (bytes, weight, tags) in cases {
            let instance = decode(bytes).unwrap();
            assert_eq!(instance.weight, weight);
            assert_eq!(instance.tags.len(), tags);
            assert_eq!(instance.start_time, None);
        }
    }

    #[test]
    fn round_trips_our_extra_fields() {
        let mut info = info();
        info.warmup = Duration::from_secs(30);
        info.payload_codec = Some("thrift".into());
        let instance = decode(encode(&info).as_bytes()).unwrap();
        assert_eq!(instance, Instance::from(&info));
    }

    #[test]
    fn rejects_malformed_values() {
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"network":"tcp","address":"nohost","weight":1}"#).is_err());
        assert!(decode(br#"{"address":"1.2.3.4:5"}"#).is_err());
    }
}
