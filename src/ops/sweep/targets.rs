//! Scan targets: addresses, CIDR blocks, ranges, host names and hosts files, expanded into a
//! list of addresses in the order given, without duplicates.
//!
//! Promises: bad input is an error naming the offending text, never a panic; a CIDR block
//! shorter than /31 (IPv4) or /127 (IPv6) leaves out its network and broadcast addresses, as
//! fping -g does; nothing is resolved here (names are returned for the caller to resolve).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Literal addresses (one, or the expansion of a block or range).
    Addrs(Vec<IpAddr>),
    /// A host name, to be resolved.
    Name(String),
}

/// Counts the addresses a target expands to, without expanding it (for the size guard).
fn block_size(prefix: u8, bits: u8) -> u128 {
    let host_bits = u32::from(bits - prefix);
    if host_bits >= 127 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

/// Parses one target. `limit` caps the addresses a block or range may expand to.
pub fn parse(text: &str, limit: u128) -> Result<Target, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty target".into());
    }
    if let Some((net, len)) = t.split_once('/') {
        let addr: IpAddr = net
            .parse()
            .map_err(|_| format!("bad CIDR block '{t}': '{net}' is not an address"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("bad CIDR block '{t}': prefix must be 0..={bits}"))?;
        let size = block_size(prefix, bits);
        if size > limit {
            return Err(format!(
                "{t} holds {size} addresses, more than {limit}; pass --yes to sweep it anyway"
            ));
        }
        return Ok(Target::Addrs(expand_block(addr, prefix)));
    }
    if let Ok(a) = t.parse::<IpAddr>() {
        return Ok(Target::Addrs(vec![a]));
    }
    if let Some((from, to)) = t.split_once('-') {
        if let Ok(start) = from.parse::<Ipv4Addr>() {
            let end: Ipv4Addr = if let Ok(last) = to.parse::<u8>() {
                let o = start.octets();
                Ipv4Addr::new(o[0], o[1], o[2], last)
            } else {
                to.parse().map_err(|_| {
                    format!("bad range '{t}': '{to}' is neither a last octet nor an address")
                })?
            };
            let (s, e) = (u32::from(start), u32::from(end));
            if e < s {
                return Err(format!("bad range '{t}': it ends before it starts"));
            }
            if u128::from(e - s) + 1 > limit {
                return Err(format!(
                    "{t} holds {} addresses, more than {limit}; pass --yes to sweep it anyway",
                    u64::from(e - s) + 1
                ));
            }
            return Ok(Target::Addrs(
                (s..=e).map(|v| IpAddr::V4(v.into())).collect(),
            ));
        }
    }
    // Something that looks like an address but is not one is an error, not a name.
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("bad address '{t}'"));
    }
    if t.contains(':') {
        return Err(format!("bad IPv6 address '{t}'"));
    }
    let valid_name = t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
        });
    if !valid_name {
        return Err(format!(
            "bad target '{t}': not an address, block, range or host name"
        ));
    }
    Ok(Target::Name(t.to_string()))
}

fn expand_block(addr: IpAddr, prefix: u8) -> Vec<IpAddr> {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let net = u32::from(a) & mask;
            let last = net | !mask;
            let (lo, hi) = if prefix < 31 {
                (net + 1, last - 1)
            } else {
                (net, last)
            };
            (lo..=hi).map(|v| IpAddr::V4(v.into())).collect()
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            let net = u128::from(a) & mask;
            let last = net | !mask;
            let (lo, hi) = if prefix < 127 {
                (net + 1, last - 1)
            } else {
                (net, last)
            };
            let mut v = Vec::new();
            let mut x = lo;
            loop {
                v.push(IpAddr::V6(Ipv6Addr::from(x)));
                if x >= hi {
                    break;
                }
                x += 1;
            }
            v
        }
    }
}

/// Reads a hosts file: one target per line; blank lines and `#` comments are skipped.
pub fn read_hosts_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read hosts file {}: {e}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(format!("hosts file {} lists no targets", path.display()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(t: &str) -> Vec<String> {
        match parse(t, 1 << 16).unwrap() {
            Target::Addrs(v) => v.iter().map(|a| a.to_string()).collect(),
            Target::Name(n) => vec![format!("name:{n}")],
        }
    }

    #[test]
    fn blocks_ranges_and_names() {
        assert_eq!(addrs("127.0.0.1"), ["127.0.0.1"]);
        assert_eq!(addrs("::1"), ["::1"]);
        let b = addrs("127.0.0.0/28");
        assert_eq!(b.len(), 14);
        assert_eq!(b[0], "127.0.0.1");
        assert_eq!(b[13], "127.0.0.14");
        assert_eq!(addrs("127.0.0.1/32"), ["127.0.0.1"]);
        assert_eq!(
            addrs("127.0.0.1-3"),
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        );
        assert_eq!(addrs("127.0.0.254-127.0.1.1").len(), 4);
        assert_eq!(addrs("localhost"), ["name:localhost"]);
        assert_eq!(addrs("::/126").len(), 2);
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "300.1.1.1",
            "10.0.0.0/33",
            "127.0.0.9-3",
            "1.2.3",
            "fe80::zz",
            "a..b",
            "-x",
            "",
            "127.0.0.1-300",
            "/8",
        ] {
            assert!(parse(bad, 1 << 16).is_err(), "{bad}");
        }
        let big = parse("10.0.0.0/8", 1 << 16).unwrap_err();
        assert!(big.contains("--yes"), "{big}");
        assert!(parse("10.0.0.0/12", 1 << 24).is_ok());
    }
}
