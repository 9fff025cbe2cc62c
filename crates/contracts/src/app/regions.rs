//! Where a client IP is: the lookup behind the "signing far from home" risk check. Pluggable;
//! the built-in table maps a few address blocks for tests and demos, and operators load their
//! own (CIDR,region lines) with `RegionTable::parse`.
use ipnet::IpNet;
use std::net::IpAddr;

pub trait RegionLookup: Send + Sync + 'static {
    /// The region of `ip`, or `None` when unknown.
    fn region(&self, ip: IpAddr) -> Option<String>;
}

/// Address blocks (IPv4 or IPv6) and their regions, longest prefix wins.
#[derive(Debug, Clone, Default)]
pub struct RegionTable {
    blocks: Vec<(IpNet, String)>,
}

/// The built-in table: the three documentation blocks of RFC 5737, so tests and demos can
/// sign "from" three regions without real addresses.
pub const BUILT_IN: &str = "\
192.0.2.0/24,beijing
198.51.100.0/24,shanghai
203.0.113.0/24,guangdong
";

impl RegionTable {
    /// Parses `CIDR,region` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (cidr, region) = line.split_once(',').ok_or_else(|| format!("line {}: expected CIDR,region", n + 1))?;
            let net: IpNet = cidr.trim().parse().map_err(|e| format!("line {}: {cidr:?}: {e}", n + 1))?;
            blocks.push((net.trunc(), region.trim().to_string()));
        }
        blocks.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()));
        Ok(RegionTable { blocks })
    }

    pub fn built_in() -> Self {
        // The built-in text is a constant that parses.
        RegionTable::parse(BUILT_IN).expect("the built-in region table parses")
    }
}

impl RegionLookup for RegionTable {
    fn region(&self, ip: IpAddr) -> Option<String> {
        self.blocks.iter().find(|(net, _)| net.contains(&ip)).map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let t = RegionTable::parse("10.0.0.0/8,north\n10.1.0.0/16,south\n# comment\n").unwrap();
        assert_eq!(t.region("10.1.2.3".parse().unwrap()).as_deref(), Some("south"));
        assert_eq!(t.region("10.2.2.3".parse().unwrap()).as_deref(), Some("north"));
        assert_eq!(t.region("11.0.0.1".parse().unwrap()), None);
        assert!(RegionTable::parse("10.0.0.0,x").is_err());
        assert_eq!(RegionTable::built_in().region("198.51.100.7".parse().unwrap()).as_deref(), Some("shanghai"));
        // IPv6 blocks too, and an address of one family never matches the other's.
        let t = RegionTable::parse("2001:db8::/32,zhejiang\n10.0.0.0/8,north").unwrap();
        assert_eq!(t.region("2001:db8::1".parse().unwrap()).as_deref(), Some("zhejiang"));
        assert_eq!(t.region("2001:db9::1".parse().unwrap()), None);
        assert!(RegionTable::parse("10.0.0.0/33,x").is_err());
    }
}
