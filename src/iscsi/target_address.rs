//! The address part of a TargetAddress value (RFC 7143 §13.8: `domainname[:port]`, an IPv6
//! literal in brackets), written once for SendTargets answers and login redirects, so both
//! name a portal the same way.

use std::net::IpAddr;

/// `ip:port` as TargetAddress wants it: IPv4 bare, an IPv4-mapped IPv6 address as the IPv4 one
/// it stands for (a dual-stack listener sees IPv4 initiators that way), other IPv6 in brackets.
pub fn format_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None => format!("[{v6}]:{port}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::format_address;

    #[test]
    fn ipv4_bare_ipv6_bracketed_mapped_as_ipv4() {
        assert_eq!(
            format_address("127.0.0.1".parse().unwrap(), 3260),
            "127.0.0.1:3260"
        );
        assert_eq!(format_address("::1".parse().unwrap(), 3261), "[::1]:3261");
        assert_eq!(
            format_address("::ffff:10.0.0.7".parse().unwrap(), 3260),
            "10.0.0.7:3260"
        );
    }
}
