//! Two namespaces joined by veth for journey and web tests.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};

use groundzero_lab::netns::{veth, Netns};

pub const NODE_MAC: &str = "02:e2:e0:00:01:01";
pub const PEER_MAC: &str = "02:e2:e0:00:01:02";
pub const NODE: [&str; 2] = ["198.18.7.1", "2001:2:7::1"];
pub const GOOD: [&str; 2] = ["198.18.7.2", "2001:2:7::2"];
pub const BAD: [&str; 2] = ["198.18.7.3", "2001:2:7::3"];
pub const FLOOD: [&str; 2] = ["198.18.7.4", "2001:2:7::4"];

/// Two namespaces joined by veth: the node (where XDP runs and an application reads) and a
/// peer holding the good, bad and flooding sources, with static neighbours so no ARP or NDP
/// reaches the program.
pub struct Topology {
    pub node: Netns,
    pub peer: Netns,
    pub node_if: String,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let node = Netns::create(&format!("jn{tag}")).unwrap();
        let peer = Netns::create(&format!("jp{tag}")).unwrap();
        for ns in [&node, &peer] {
            for (k, v) in [
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.addr_gen_mode", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(k, v).unwrap();
            }
        }
        let (node_if, peer_if) = (format!("gzj-n{tag}"), format!("gzj-p{tag}"));
        veth(&node, &node_if, &peer, &peer_if).unwrap();
        node.ip(&["link", "set", "dev", &node_if, "address", NODE_MAC])
            .unwrap();
        peer.ip(&["link", "set", "dev", &peer_if, "address", PEER_MAC])
            .unwrap();
        for i in 0..2 {
            let plen = if i == 0 { "24" } else { "64" };
            let add = |ns: &Netns, addr: &str, dev: &str| {
                let cidr = format!("{addr}/{plen}");
                let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
                if i == 1 {
                    args.push("nodad");
                }
                ns.ip(&args).unwrap();
            };
            add(&node, NODE[i], &node_if);
            for src in [GOOD[i], BAD[i], FLOOD[i]] {
                add(&peer, src, &peer_if);
                node.ip(&[
                    "neigh",
                    "add",
                    src,
                    "lladdr",
                    PEER_MAC,
                    "dev",
                    &node_if,
                    "nud",
                    "permanent",
                ])
                .unwrap();
            }
            peer.ip(&[
                "neigh",
                "add",
                NODE[i],
                "lladdr",
                NODE_MAC,
                "dev",
                &peer_if,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        Topology {
            node,
            peer,
            node_if,
        }
    }

    /// Sends `n` datagrams from `src` to `dst`.
    pub fn send(&self, src: &str, dst: SocketAddr, n: usize) {
        self.peer.run(|| {
            let s = UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
            for k in 0..n {
                s.send_to(format!("ping {k}").as_bytes(), dst).unwrap();
            }
        });
    }
}
