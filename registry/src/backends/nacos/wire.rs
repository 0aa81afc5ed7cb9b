//! The Nacos instance, exactly as Kitex's `registry-nacos` writes and reads it, and the JSON
//! bodies of the 2.x gRPC requests this crate sends.
//!
//! Kitex registers: service name = the Kitex service name, group `DEFAULT_GROUP`, cluster
//! `DEFAULT`, ip and port of the address, `weight` = the Kitex weight (a float in Nacos),
//! `enabled` and `healthy` true, `ephemeral` true, `metadata` = the tags (plus
//! `KITEX_NACOS_ENV_TAGS`). Its resolver asks for healthy instances of its cluster, keeps those
//! enabled with a weight above 0 (nacos-sdk-go's `SelectInstances`), reads `int(weight)` and
//! the metadata as tags. We write the same, plus three metadata keys Kitex passes on as
//! harmless tags (start time, warm-up, payload codec), which we read back and take out of the
//! tags.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::discovery::Instance;
use crate::info::{Info, MAX_WEIGHT};

/// Metadata key for the start time (Unix milliseconds).
pub const START_TIME_KEY: &str = "service-registry.start_time_ms";
/// Metadata key for the warm-up period (milliseconds).
pub const WARMUP_KEY: &str = "service-registry.warmup_ms";
/// Metadata key for the payload codec.
pub const PAYLOAD_CODEC_KEY: &str = "service-registry.payload_codec";

/// Nacos' instance, as the 2.x API and the 1.x HTTP API carry it (camelCase JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct NacosInstance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub ip: String,
    pub port: u32,
    pub weight: f64,
    pub healthy: bool,
    pub enabled: bool,
    pub ephemeral: bool,
    pub cluster_name: String,
    pub service_name: String,
    pub metadata: Option<HashMap<String, String>>,
}

/// The instance Kitex would register for `info` in `cluster`, with `extra` metadata
/// (`KITEX_NACOS_ENV_TAGS`) over the instance's own tags: Kitex's `mergeTags(info.Tags,
/// nacos.Tags)`, where the later map wins.
pub(crate) fn encode(
    info: &Info,
    cluster: &str,
    extra: &BTreeMap<String, String>,
) -> NacosInstance {
    let mut metadata: HashMap<String, String> = info.tags.clone().into_iter().collect();
    metadata.extend(extra.clone());
    if let Ok(since) = info.start_time.duration_since(UNIX_EPOCH) {
        metadata.insert(START_TIME_KEY.into(), since.as_millis().to_string());
    }
    if !info.warmup.is_zero() {
        metadata.insert(WARMUP_KEY.into(), info.warmup.as_millis().to_string());
    }
    if let Some(codec) = &info.payload_codec {
        metadata.insert(PAYLOAD_CODEC_KEY.into(), codec.clone());
    }
    NacosInstance {
        instance_id: None,
        ip: info.addr.ip().to_string(),
        port: u32::from(info.addr.port()),
        weight: f64::from(info.weight),
        healthy: true,
        enabled: true,
        ephemeral: true,
        cluster_name: cluster.to_string(),
        service_name: info.service_name.clone(),
        metadata: Some(metadata),
    }
}

/// Why an instance was left out.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum Skipped {
    #[error("it is in cluster `{0}`, not ours")]
    OtherCluster(String),
    #[error("it is unhealthy or disabled")]
    NotServing,
    #[error("its weight {0} is below 1 (Kitex reads it as {0} truncated, and skips 0)")]
    NoWeight(f64),
    #[error("`{ip}:{port}` is not an ip:port")]
    Address { ip: String, port: u32 },
}

/// Reads an instance as Kitex's resolver does: only `cluster`, healthy and enabled; the weight
/// truncated to an integer (`int(weight)`), and left out when that is 0 (Kitex's balancers
/// skip a weight <= 0, so 0.5 serves no traffic there either); the metadata as tags.
pub(crate) fn decode(instance: &NacosInstance, cluster: &str) -> Result<Instance, Skipped> {
    if instance.cluster_name != cluster {
        return Err(Skipped::OtherCluster(instance.cluster_name.clone()));
    }
    if !instance.healthy || !instance.enabled {
        return Err(Skipped::NotServing);
    }
    if instance.weight.is_nan() || instance.weight < 1.0 {
        return Err(Skipped::NoWeight(instance.weight));
    }
    let address = || Skipped::Address {
        ip: instance.ip.clone(),
        port: instance.port,
    };
    let ip: IpAddr = instance.ip.parse().map_err(|_| address())?;
    let port = u16::try_from(instance.port).map_err(|_| address())?;
    let metadata = instance.metadata.as_ref();
    let value = |key: &str| metadata.and_then(|m| m.get(key));
    let tags: BTreeMap<String, String> = metadata
        .into_iter()
        .flatten()
        .filter(|(key, _)| ![START_TIME_KEY, WARMUP_KEY, PAYLOAD_CODEC_KEY].contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let millis = |key: &str| value(key).and_then(|v| v.trim().parse::<u64>().ok());
    let start_time = millis(START_TIME_KEY).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let warmup = Duration::from_millis(millis(WARMUP_KEY).unwrap_or(0));
    let payload_codec = value(PAYLOAD_CODEC_KEY).cloned();
    Ok(Instance {
        addr: SocketAddr::new(ip, port),
        weight: instance.weight.min(f64::from(MAX_WEIGHT)) as u32,
        tags,
        start_time: start_time.filter(|t| *t > SystemTime::UNIX_EPOCH),
        warmup,
        payload_codec,
    })
}

/// A service's instances as a query or a push carries them: each host's JSON only delimited
/// (a syntax error fails the whole answer, as it must), to be read on its own
/// ([`read_host`]), so that one the server wrote oddly leaves out only itself, and a host the
/// server writes again byte for byte need not be read again.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServiceInfo {
    pub hosts: Option<Vec<Box<RawValue>>>,
    pub last_ref_time: i64,
}

impl ServiceInfo {
    /// Every host that reads as an instance; each one that does not is logged and left out.
    pub(crate) fn instances(&self, service: &str) -> Vec<NacosInstance> {
        self.hosts
            .iter()
            .flatten()
            .filter_map(|host| read_logged(service, host))
            .collect()
    }
}

/// One host, read straight into the struct; when that fails, through a JSON value, so what
/// is read is what the value reads (an object with a field written twice, which the straight
/// read refuses, reads with the last).
pub(crate) fn read_host(host: &RawValue) -> Result<NacosInstance, serde_json::Error> {
    serde_json::from_str(host.get()).or_else(|_| {
        let value: serde_json::Value = serde_json::from_str(host.get())?;
        NacosInstance::deserialize(&value)
    })
}

/// [`read_host`], logging a host that does not read as an instance.
pub(crate) fn read_logged(service: &str, host: &RawValue) -> Option<NacosInstance> {
    match read_host(host) {
        Ok(instance) => Some(instance),
        Err(err) => {
            tracing::warn!(service, %host, error = %err, "unreadable instance left out");
            None
        }
    }
}

/// Every request body: `module`, `requestId` and `headers` besides its own fields.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope<'a, T: Serialize> {
    pub module: &'static str,
    pub request_id: String,
    pub headers: &'a HashMap<String, String>,
    #[serde(flatten)]
    pub body: T,
}

/// `InstanceRequest`: register or deregister one instance.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRequest<'a> {
    pub namespace: &'a str,
    pub service_name: &'a str,
    pub group_name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub instance: &'a NacosInstance,
}

/// `SubscribeServiceRequest`: subscribe to (or unsubscribe from) a service's pushes; the answer
/// carries the current instances.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscribeRequest<'a> {
    pub namespace: &'a str,
    pub service_name: &'a str,
    pub group_name: &'a str,
    pub subscribe: bool,
    pub clusters: &'a str,
}

/// `ServiceQueryRequest`: the current instances.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryRequest<'a> {
    pub namespace: &'a str,
    pub service_name: &'a str,
    pub group_name: &'a str,
    pub cluster: &'a str,
    pub healthy_only: bool,
    pub udp_port: u16,
}

/// `ConnectionSetupRequest`: the first message on the bidirectional stream.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupRequest<'a> {
    pub client_version: &'static str,
    pub tenant: &'a str,
    pub labels: HashMap<&'static str, &'static str>,
    pub ability_table: HashMap<&'static str, bool>,
}

/// An empty body (`ServerCheckRequest`, `HealthCheckRequest`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Empty {}

/// What the server answers when it does not know the connection a request came on.
pub(crate) const UNREGISTERED: u16 = 301;
/// What the server answers when auth is on and the request carries no (valid) token.
pub(crate) const FORBIDDEN: u16 = 403;
/// Java Nacos' `INVALID_PARAM`: the request itself is wrong and always will be.
pub(crate) const INVALID_PARAM: u16 = 400;

/// What every response carries, plus `serviceInfo` for queries and subscriptions and
/// `connectionId` for a server check.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Response {
    pub result_code: u16,
    pub error_code: u16,
    pub message: Option<String>,
    pub service_info: Option<ServiceInfo>,
    pub connection_id: Option<String>,
}

/// A request the server sends on the stream (`NotifySubscriberRequest`,
/// `ClientDetectionRequest`, `ConnectResetRequest`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServerRequest {
    pub request_id: Option<String>,
    pub service_info: Option<ServiceInfo>,
    pub service_name: Option<String>,
    pub group_name: Option<String>,
}

/// The answer to a server request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ack {
    pub result_code: u16,
    pub error_code: u16,
    pub request_id: String,
}

/// `{group}@@{service}`: how Nacos names a service within its group.
pub(crate) fn grouped(group: &str, service: &str) -> String {
    format!("{group}@@{service}")
}

/// The service name without a `{group}@@` prefix.
pub(crate) fn ungrouped(name: &str) -> &str {
    name.rsplit_once("@@").map_or(name, |(_, service)| service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::DEFAULT_WEIGHT;

    fn kitex(json: &str) -> NacosInstance {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn writes_what_kitex_writes() {
        let mut info = Info::new("echo", "10.0.0.7:8888".parse().unwrap());
        info.tags.insert("idc".into(), "hz".into());
        info.start_time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let extra = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("idc".to_string(), "sh".to_string()),
        ]);
        let instance = encode(&info, "DEFAULT", &extra);
        let json = serde_json::to_value(&instance).unwrap();
        assert_eq!(json["ip"], "10.0.0.7");
        assert_eq!(json["port"], 8888);
        assert_eq!(json["weight"], f64::from(DEFAULT_WEIGHT));
        assert_eq!(json["healthy"], true);
        assert_eq!(json["enabled"], true);
        assert_eq!(json["ephemeral"], true);
        assert_eq!(json["clusterName"], "DEFAULT");
        assert_eq!(json["serviceName"], "echo");
        assert_eq!(
            json["metadata"]["idc"], "sh",
            "KITEX_NACOS_ENV_TAGS wins, as in Kitex's mergeTags(info.Tags, nacos.Tags)"
        );
        assert_eq!(json["metadata"]["env"], "prod");
        assert_eq!(json["metadata"][START_TIME_KEY], "1700000000123");
        let back = decode(&instance, "DEFAULT").unwrap();
        assert_eq!(back.tags.len(), 2);
        assert_eq!(back.start_time, Some(info.start_time));
    }

    #[test]
    fn reads_what_kitex_writes() {
        // As nacos-sdk-go returns an instance Kitex registered (v2 naming API JSON).
        let instance = kitex(
            r#"{"instanceId":"10.0.0.7#8888#DEFAULT#DEFAULT_GROUP@@echo","ip":"10.0.0.7","port":8888,
                "weight":30,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT",
                "serviceName":"DEFAULT_GROUP@@echo","metadata":{"cloudwego.nacos.client":"kitex","idc":"hz"},
                "instanceHeartBeatInterval":5000}"#,
        );
        let read = decode(&instance, "DEFAULT").unwrap();
        assert_eq!(read.addr, "10.0.0.7:8888".parse().unwrap());
        assert_eq!(read.weight, 30);
        assert_eq!(read.tags.len(), 2);
        assert_eq!(read.start_time, None);
    }

    #[test]
    fn skips_what_kitex_skips() {
        let base = r#"{"ip":"10.0.0.7","port":1,"weight":1.5,"healthy":true,"enabled":true,"clusterName":"DEFAULT"}"#;
        assert_eq!(decode(&kitex(base), "DEFAULT").unwrap().weight, 1);
        assert!(matches!(
            decode(&kitex(base), "HZ"),
            Err(Skipped::OtherCluster(_))
        ));
        let unhealthy = base.replace(r#""healthy":true"#, r#""healthy":false"#);
        assert_eq!(
            decode(&kitex(&unhealthy), "DEFAULT"),
            Err(Skipped::NotServing)
        );
        let disabled = base.replace(r#""enabled":true"#, r#""enabled":false"#);
        assert_eq!(
            decode(&kitex(&disabled), "DEFAULT"),
            Err(Skipped::NotServing)
        );
        let weightless = base.replace("1.5", "0");
        assert_eq!(
            decode(&kitex(&weightless), "DEFAULT"),
            Err(Skipped::NoWeight(0.0))
        );
        // Kitex reads int(0.2) = 0, and its balancers skip weight 0.
        let small = base.replace("1.5", "0.2");
        assert_eq!(
            decode(&kitex(&small), "DEFAULT"),
            Err(Skipped::NoWeight(0.2))
        );
        let bad_ip = base.replace("10.0.0.7", "not-an-ip");
        assert!(matches!(
            decode(&kitex(&bad_ip), "DEFAULT"),
            Err(Skipped::Address { .. })
        ));
        let bad_port = base.replace(r#""port":1"#, r#""port":70000"#);
        assert!(matches!(
            decode(&kitex(&bad_port), "DEFAULT"),
            Err(Skipped::Address { .. })
        ));
    }

    #[test]
    fn one_unreadable_host_leaves_out_only_itself() {
        let info: ServiceInfo = serde_json::from_str(
            r#"{"lastRefTime":5,"hosts":[
                {"ip":null,"port":1,"weight":1.0,"healthy":true,"enabled":true,"clusterName":"DEFAULT"},
                {"ip":"10.0.0.8","port":2,"weight":1.0,"healthy":true,"enabled":true,"clusterName":"DEFAULT"},
                {"ip":"10.0.0.9","port":"three","weight":1.0}
            ]}"#,
        )
        .unwrap();
        let read = info.instances("echo");
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(read[0].ip, "10.0.0.8");
        assert_eq!(info.last_ref_time, 5);
    }

    #[test]
    fn hosts_read_as_a_json_value_would() {
        // A field written twice: a JSON value keeps the last, and so does the host's read.
        let info: ServiceInfo = serde_json::from_str(
            r#"{"hosts":[
                {"ip":"10.0.0.7","ip":"10.0.0.8","port":2,"weight":1.0,"healthy":true,"enabled":true,"clusterName":"DEFAULT"},
                7,
                {"ip":"10.0.0.9","port":3,"weight":2,"metadata":{"a":"1","a":"2"},"extra":[{"x":null}]}
            ]}"#,
        )
        .unwrap();
        let read = info.instances("echo");
        assert_eq!(read.len(), 2, "{read:?}");
        assert_eq!(read[0].ip, "10.0.0.8");
        assert_eq!(read[1].weight, 2.0);
        assert_eq!(read[1].metadata.as_ref().unwrap()["a"], "2");
        let hosts = info.hosts.as_ref().unwrap();
        assert_eq!(hosts.len(), 3);
        assert!(read_host(&hosts[1]).is_err(), "7 is not an instance");
        // No hosts, or null: none. Hosts that are not a list, or not JSON: the answer fails.
        for json in [r#"{}"#, r#"{"hosts":null}"#, r#"{"hosts":[]}"#] {
            let info: ServiceInfo = serde_json::from_str(json).unwrap();
            assert!(info.instances("echo").is_empty(), "{json}");
        }
        for json in [
            r#"{"hosts":{}}"#,
            r#"{"hosts":[{"ip":}]}"#,
            r#"{"hosts":[{}"#,
        ] {
            assert!(serde_json::from_str::<ServiceInfo>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn decode_takes_our_keys_out_of_the_tags() {
        let host = kitex(
            r#"{"ip":"10.0.0.7","port":1,"weight":3,"healthy":true,"enabled":true,"clusterName":"DEFAULT",
                "metadata":{"idc":"hz","service-registry.start_time_ms":" 1700000000123 ",
                "service-registry.warmup_ms":"2500","service-registry.payload_codec":"protobuf"}}"#,
        );
        let read = decode(&host, "DEFAULT").unwrap();
        assert_eq!(
            read.tags,
            BTreeMap::from([("idc".to_string(), "hz".to_string())])
        );
        assert_eq!(
            read.start_time,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(read.warmup, Duration::from_millis(2500));
        assert_eq!(read.payload_codec.as_deref(), Some("protobuf"));
        let unreadable = host.metadata.as_ref().map(|m| {
            let mut m = m.clone();
            m.insert(START_TIME_KEY.into(), "soon".into());
            m.insert(WARMUP_KEY.into(), "-1".into());
            m
        });
        let read = decode(
            &NacosInstance {
                metadata: unreadable,
                ..host
            },
            "DEFAULT",
        )
        .unwrap();
        assert_eq!((read.start_time, read.warmup), (None, Duration::ZERO));
        assert_eq!(
            read.tags.len(),
            1,
            "unreadable values of our keys are not tags either"
        );
    }

    #[test]
    fn request_bodies_have_nacos_field_names() {
        let instance = encode(
            &Info::new("echo", "127.0.0.1:1".parse().unwrap()),
            "DEFAULT",
            &BTreeMap::new(),
        );
        let headers = HashMap::new();
        let body = Envelope {
            module: "naming",
            request_id: "7".into(),
            headers: &headers,
            body: InstanceRequest {
                namespace: "",
                service_name: "echo",
                group_name: "DEFAULT_GROUP",
                kind: "registerInstance",
                instance: &instance,
            },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["module"], "naming");
        assert_eq!(json["requestId"], "7");
        assert_eq!(json["type"], "registerInstance");
        assert_eq!(json["groupName"], "DEFAULT_GROUP");
        assert_eq!(json["instance"]["ip"], "127.0.0.1");
        assert_eq!(ungrouped("DEFAULT_GROUP@@echo"), "echo");
        assert_eq!(ungrouped("echo"), "echo");
    }
}
