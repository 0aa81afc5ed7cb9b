//! Which address to register when the server listens on `0.0.0.0` or `::`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::RegistrarError;
use crate::env::{EnvError, Vars, ADVERTISE_ADDR_ENV, KITEX_IP_ENV, KITEX_PORT_ENV};

/// The environment variables that decide the advertised address (empty values count as unset,
/// as in Kitex).
#[derive(Clone, Debug, Default)]
pub(crate) struct AdvertiseEnv {
    pub(crate) addr: Option<String>,
    pub(crate) kitex_ip: Option<String>,
    pub(crate) kitex_port: Option<String>,
}

impl AdvertiseEnv {
    pub(crate) fn read(vars: &Vars) -> Result<Self, EnvError> {
        Ok(Self {
            addr: vars.get(ADVERTISE_ADDR_ENV)?,
            kitex_ip: vars.get(KITEX_IP_ENV)?,
            kitex_port: vars.get(KITEX_PORT_ENV)?,
        })
    }
}

/// Parses `ip:port`, `[ipv6]:port`, a bare IP or a bracketed bare IPv6 (`port` fills in).
pub(crate) fn parse_advertise(value: &str, port: u16) -> Option<SocketAddr> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// True for addresses other hosts can plausibly reach: not loopback, unspecified, link-local
/// or multicast.
fn routable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || link_local || v6.is_multicast())
        }
    }
}

/// Picks the address to advertise for an unspecified listen IP from `candidates` (in interface
/// order): the first routable one of the same family, else loopback of that family.
pub(crate) fn pick_routable(listen: IpAddr, candidates: &[IpAddr]) -> IpAddr {
    let same_family = |ip: &&IpAddr| ip.is_ipv4() == listen.is_ipv4();
    candidates
        .iter()
        .filter(same_family)
        .find(|ip| routable(ip))
        .copied()
        .unwrap_or(match listen {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        })
}

/// This host's interface addresses, in the order the OS lists them.
pub(crate) fn interface_ips() -> Result<Vec<IpAddr>, RegistrarError> {
    let interfaces = if_addrs::get_if_addrs().map_err(RegistrarError::InterfaceList)?;
    Ok(interfaces.into_iter().map(|i| i.ip()).collect())
}

/// The address to register: [`ADVERTISE_ADDR_ENV`], else the builder's explicit address (or
/// the listen address with an unspecified IP replaced by a routable one) with Kitex's IP and
/// port variables applied.
pub(crate) fn advertised_addr(
    listen: SocketAddr,
    explicit: Option<SocketAddr>,
    env: AdvertiseEnv,
) -> Result<SocketAddr, RegistrarError> {
    let invalid = |variable, value, expected| {
        RegistrarError::Env(EnvError::Invalid {
            variable,
            value,
            expected,
        })
    };
    if let Some(value) = env.addr {
        let addr = parse_advertise(&value, listen.port()).ok_or_else(|| {
            invalid(
                ADVERTISE_ADDR_ENV,
                value.clone(),
                "an address: `ip:port`, `[ipv6]:port` or a bare IP",
            )
        })?;
        if let Some(explicit) = explicit {
            tracing::warn!(
                variable = ADVERTISE_ADDR_ENV,
                %addr,
                code = %explicit,
                "{ADVERTISE_ADDR_ENV} replaces the advertised address given to the builder"
            );
        }
        return Ok(addr);
    }
    let kitex_ip = match env.kitex_ip {
        Some(value) => Some(
            parse_ip(&value)
                .ok_or_else(|| invalid(KITEX_IP_ENV, value.clone(), "an IP address"))?,
        ),
        None => None,
    };
    let kitex_port = match env.kitex_port {
        Some(value) => Some(
            value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(KITEX_PORT_ENV, value.clone(), "a port number (1-65535)"))?,
        ),
        None => None,
    };
    if let (Some(explicit), true) = (explicit, kitex_ip.is_some() || kitex_port.is_some()) {
        tracing::warn!(
            code = %explicit,
            ip = ?kitex_ip,
            port = ?kitex_port,
            "{KITEX_IP_ENV} / {KITEX_PORT_ENV} replace part of the advertised address given to the builder"
        );
    }
    let mut addr = match explicit {
        Some(addr) => addr,
        None if kitex_ip.is_some() || !listen.ip().is_unspecified() => listen,
        None => {
            let ip = pick_routable(listen.ip(), &interface_ips()?);
            if ip.is_loopback() {
                tracing::warn!(%listen, "no routable interface address of the listen family; advertising loopback");
            }
            SocketAddr::new(ip, listen.port())
        }
    };
    if let Some(ip) = kitex_ip {
        addr.set_ip(ip);
    }
    if let Some(port) = kitex_port {
        addr.set_port(port);
    }
    Ok(addr)
}

fn parse_ip(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_written_forms() {
        assert_eq!(
            parse_advertise("10.0.0.7:81", 1),
            Some("10.0.0.7:81".parse().unwrap())
        );
        assert_eq!(
            parse_advertise("10.0.0.7", 80),
            Some("10.0.0.7:80".parse().unwrap())
        );
        assert_eq!(
            parse_advertise("[fd00::1]:81", 1),
            Some("[fd00::1]:81".parse().unwrap())
        );
        assert_eq!(
            parse_advertise("[fd00::1]", 80),
            Some("[fd00::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_advertise("fd00::1", 80),
            Some("[fd00::1]:80".parse().unwrap())
        );
        assert_eq!(parse_advertise("host.example:80", 80), None);
    }

    #[test]
    fn picks_first_routable_of_same_family() {
        let ips: Vec<IpAddr> = [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "fd00::7",
            "10.1.2.3",
            "192.168.1.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            pick_routable("0.0.0.0".parse().unwrap(), &ips),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            pick_routable("::".parse().unwrap(), &ips),
            "fd00::7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn falls_back_to_loopback() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        assert!(pick_routable("::".parse().unwrap(), &ips).is_loopback());
        assert!(pick_routable("0.0.0.0".parse().unwrap(), &ips).is_loopback());
    }

    #[test]
    fn env_wins_over_builder_and_bad_env_is_an_error() {
        let listen: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let explicit: SocketAddr = "10.9.9.9:1".parse().unwrap();
        let env = |addr: &str| AdvertiseEnv {
            addr: Some(addr.into()),
            ..AdvertiseEnv::default()
        };
        let got = advertised_addr(listen, Some(explicit), env("[fd00::2]")).unwrap();
        assert_eq!(got, "[fd00::2]:9000".parse().unwrap());
        assert_eq!(
            advertised_addr(listen, Some(explicit), AdvertiseEnv::default()).unwrap(),
            explicit
        );
        assert!(advertised_addr(listen, None, env("nope")).is_err());
    }

    #[test]
    fn kitex_variables_replace_ip_and_port_below_our_own() {
        let listen: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let kitex = |ip: Option<&str>, port: Option<&str>| AdvertiseEnv {
            addr: None,
            kitex_ip: ip.map(Into::into),
            kitex_port: port.map(Into::into),
        };
        assert_eq!(
            advertised_addr(listen, None, kitex(Some("10.0.0.5"), None)).unwrap(),
            "10.0.0.5:9000".parse().unwrap()
        );
        assert_eq!(
            advertised_addr(listen, None, kitex(Some("10.0.0.5"), Some("8888"))).unwrap(),
            "10.0.0.5:8888".parse().unwrap()
        );
        let explicit: SocketAddr = "10.9.9.9:1".parse().unwrap();
        assert_eq!(
            advertised_addr(listen, Some(explicit), kitex(None, Some("2"))).unwrap(),
            "10.9.9.9:2".parse().unwrap()
        );
        let ours = AdvertiseEnv {
            addr: Some("10.1.1.1:7".into()),
            ..kitex(Some("10.0.0.5"), Some("8888"))
        };
        assert_eq!(
            advertised_addr(listen, None, ours).unwrap(),
            "10.1.1.1:7".parse().unwrap()
        );
        let err = advertised_addr(listen, None, kitex(Some("host.example"), None)).unwrap_err();
        assert!(err.to_string().contains(KITEX_IP_ENV), "{err}");
        let err = advertised_addr(listen, None, kitex(None, Some("0"))).unwrap_err();
        assert!(err.to_string().contains(KITEX_PORT_ENV), "{err}");
    }

    #[test]
    fn unspecified_listen_resolves_to_an_address_of_this_host() {
        // Compares with this host's interface list; never dials the address.
        let listen: SocketAddr = "0.0.0.0:4321".parse().unwrap();
        let got = advertised_addr(listen, None, AdvertiseEnv::default()).unwrap();
        assert_eq!(got.port(), 4321);
        assert!(got.is_ipv4());
        let ips = interface_ips().unwrap();
        assert!(
            ips.contains(&got.ip()) || got.ip().is_loopback(),
            "{got} not in {ips:?}"
        );
        if ips.iter().any(|ip| ip.is_ipv4() && routable(ip)) {
            assert!(routable(&got.ip()), "{got} should be routable: {ips:?}");
        }

        let got6 =
            advertised_addr("[::]:4321".parse().unwrap(), None, AdvertiseEnv::default()).unwrap();
        assert!(got6.is_ipv6(), "{got6}");
        assert!(
            ips.contains(&got6.ip()) || got6.ip().is_loopback(),
            "{got6} not in {ips:?}"
        );
        if ips.iter().any(|ip| ip.is_ipv6() && routable(ip)) {
            assert!(routable(&got6.ip()), "{got6} should be routable: {ips:?}");
        }
    }
}
