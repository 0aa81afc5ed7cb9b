//! Which address to register when the server listens on `0.0.0.0` or `::`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::RegistrarError;

/// The environment variable that sets the advertised address; it wins over the builder.
pub const ADVERTISE_ADDR_ENV: &str = "SERVICE_REGISTRY_ADVERTISE_ADDR";

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

/// The address to register: the environment variable, else the builder's explicit address,
/// else the listen address with an unspecified IP replaced by a routable one.
pub(crate) fn advertised_addr(
    listen: SocketAddr,
    explicit: Option<SocketAddr>,
    env_value: Option<String>,
) -> Result<SocketAddr, RegistrarError> {
    if let Some(value) = env_value {
        return parse_advertise(&value, listen.port()).ok_or(
            RegistrarError::InvalidAdvertiseAddr {
                value,
                source_name: ADVERTISE_ADDR_ENV,
            },
        );
    }
    if let Some(addr) = explicit {
        return Ok(addr);
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let ip = pick_routable(listen.ip(), &interface_ips()?);
    if ip.is_loopback() {
        tracing::warn!(%listen, "no routable interface address of the listen family; advertising loopback");
    }
    Ok(SocketAddr::new(ip, listen.port()))
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
        let got = advertised_addr(listen, Some(explicit), Some("[fd00::2]".into())).unwrap();
        assert_eq!(got, "[fd00::2]:9000".parse().unwrap());
        assert_eq!(
            advertised_addr(listen, Some(explicit), None).unwrap(),
            explicit
        );
        assert!(advertised_addr(listen, None, Some("nope".into())).is_err());
    }

    #[test]
    fn unspecified_listen_resolves_to_an_address_of_this_host() {
        // Compares with this host's interface list; never dials the address.
        let listen: SocketAddr = "0.0.0.0:4321".parse().unwrap();
        let got = advertised_addr(listen, None, None).unwrap();
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

        let got6 = advertised_addr("[::]:4321".parse().unwrap(), None, None).unwrap();
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
