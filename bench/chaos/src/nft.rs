//! nftables rulesets the network faults install inside one host's namespace, each in its own
//! table (`pgbc_f<id>`) so that healing a fault is deleting its table. Drops match the host's
//! `eth0` only: traffic a host sends to itself keeps working, as in a real partition.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The table name of fault number `id`.
pub fn table_name(id: u32) -> String {
    format!("pgbc_f{id}")
}

fn set(ips: &[Ipv4Addr]) -> String {
    let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Drop everything in and out of `eth0`: the host is cut from every other host.
pub fn isolate(table: &str) -> String {
    format!(
        "table ip {table} {{\n\
         \x20 chain input {{ type filter hook input priority -10; policy accept; iifname \"eth0\" drop; }}\n\
         \x20 chain output {{ type filter hook output priority -10; policy accept; oifname \"eth0\" drop; }}\n\
         }}\n"
    )
}

/// Drop traffic to and from `peers`, both ways.
pub fn block(table: &str, peers: &[Ipv4Addr]) -> String {
    let s = set(peers);
    format!(
        "table ip {table} {{\n\
         \x20 chain input {{ type filter hook input priority -10; policy accept; ip saddr {s} drop; }}\n\
         \x20 chain output {{ type filter hook output priority -10; policy accept; ip daddr {s} drop; }}\n\
         }}\n"
    )
}

/// Send new TCP connections to each `(target, proxy)` pair's target through the proxy
/// (destination NAT on output), and reset the connections already open to the targets so
/// that the host reconnects through the proxy.
pub fn redirect(table: &str, routes: &[(SocketAddrV4, SocketAddrV4)]) -> String {
    let mut nat = String::new();
    let mut reset = String::new();
    for (target, proxy) in routes {
        nat.push_str(&format!(
            " ip daddr {} tcp dport {} dnat to {};",
            target.ip(),
            target.port(),
            proxy
        ));
        reset.push_str(&format!(
            " ip daddr {} tcp dport {} reject with tcp reset;",
            target.ip(),
            target.port()
        ));
    }
    format!(
        "table ip {table} {{\n\
         \x20 chain nat_output {{ type nat hook output priority -100; policy accept;{nat} }}\n\
         \x20 chain output {{ type filter hook output priority 0; policy accept;{reset} }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolate_drops_eth0_both_ways() {
        let r = isolate("pgbc_f1");
        assert!(r.starts_with("table ip pgbc_f1 {"));
        assert!(r.contains("hook input") && r.contains("iifname \"eth0\" drop"));
        assert!(r.contains("hook output") && r.contains("oifname \"eth0\" drop"));
    }

    #[test]
    fn block_names_every_peer_in_both_directions() {
        let r = block(
            "t",
            &[Ipv4Addr::new(10, 231, 5, 12), Ipv4Addr::new(10, 231, 5, 13)],
        );
        assert!(
            r.contains("ip saddr { 10.231.5.12, 10.231.5.13 } drop"),
            "{r}"
        );
        assert!(
            r.contains("ip daddr { 10.231.5.12, 10.231.5.13 } drop"),
            "{r}"
        );
    }

    #[test]
    fn redirect_nats_new_connections_and_resets_old_ones() {
        let target: SocketAddrV4 = "10.231.5.21:2379".parse().unwrap();
        let proxy: SocketAddrV4 = "10.231.5.2:40000".parse().unwrap();
        let r = redirect("t", &[(target, proxy)]);
        assert!(
            r.contains("ip daddr 10.231.5.21 tcp dport 2379 dnat to 10.231.5.2:40000;"),
            "{r}"
        );
        assert!(
            r.contains("ip daddr 10.231.5.21 tcp dport 2379 reject with tcp reset;"),
            "{r}"
        );
        assert!(r.contains("type nat hook output priority -100"));
    }
}
