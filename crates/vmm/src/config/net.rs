//! What carries a `virtio-net` card's frames ([`NetBackendConfig`]) and
//! the port forwards of user-mode networking ([`HostFwd`], written as
//! QEMU's `hostfwd=`: `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`).
//!
//! User-mode networking is passt (passt(1)): the guest gets an address by
//! DHCP, its TCP/UDP/ICMP leaves through ordinary host sockets, and each
//! forward becomes a passt `-t`/`-u` option (`HOSTPORT:GUESTPORT`, with
//! `ADDR/` in front when a host address is given). passt forwards to the
//! guest's own address, so a guest address in a forward is refused.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The host side of a virtio-net card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackendConfig {
    /// A TAP interface (the card's `tap` and `host_address`).
    Tap,
    /// User-mode networking: the VMM starts passt with these forwards and
    /// ends it with the VM.
    User {
        /// Host ports forwarded to the guest.
        hostfwd: Vec<HostFwd>,
    },
    /// A passt that is already running, listening on `socket` (not
    /// started or ended by the VMM).
    Passt {
        /// passt's UNIX socket.
        socket: PathBuf,
    },
}

/// A forward's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdProtocol {
    /// TCP (passt `-t`).
    Tcp,
    /// UDP (passt `-u`).
    Udp,
}

/// One port forward from the host to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFwd {
    /// TCP or UDP.
    pub protocol: FwdProtocol,
    /// The host address to bind (`None`: every address).
    pub host_addr: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The guest port it reaches.
    pub guest_port: u16,
}

/// The fix shown with every bad forward.
pub const HOSTFWD_FIX: &str =
    "write hostfwd=tcp:HOSTPORT-:GUESTPORT (or udp:, with an optional host address: tcp:127.0.0.1:8080-:80)";

fn port(what: &str, text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ if text.is_empty() => Err(format!("the {what} port is missing")),
        _ => Err(format!(
            "the {what} port \"{text}\" is not a number from 1 to 65535"
        )),
    }
}

impl HostFwd {
    /// Parses QEMU's form `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`
    /// (the protocol defaults to TCP); the error says what is wrong.
    pub fn parse(text: &str) -> Result<HostFwd, String> {
        let (protocol, rest) = match text.split_once(':') {
            Some(("tcp" | "", rest)) => (FwdProtocol::Tcp, rest),
            Some(("udp", rest)) => (FwdProtocol::Udp, rest),
            Some((p, _)) => return Err(format!("unknown protocol \"{p}\": use tcp or udp")),
            None => return Err("no protocol: it starts with tcp: or udp:".into()),
        };
        let (host, guest) = rest
            .split_once('-')
            .ok_or("no '-' between the host and the guest side")?;
        let (host_addr, host_port) = match host.rsplit_once(':') {
            Some(("", p)) => (None, p),
            Some((a, p)) => {
                let addr = a
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("the host address \"{a}\" is not an IPv4 address"))?;
                (Some(addr), p)
            }
            None => (None, host),
        };
        let (guest_addr, guest_port) = guest.rsplit_once(':').unwrap_or(("", guest));
        if !guest_addr.is_empty() {
            return Err(format!(
                "a guest address (\"{guest_addr}\") cannot be given: passt forwards to the guest's own address"
            ));
        }
        Ok(HostFwd {
            protocol,
            host_addr,
            host_port: port("host", host_port)?,
            guest_port: port("guest", guest_port)?,
        })
    }

    /// The passt option and its value (`-t`, `8080:80`).
    pub fn passt_args(&self) -> [String; 2] {
        let flag = match self.protocol {
            FwdProtocol::Tcp => "-t",
            FwdProtocol::Udp => "-u",
        };
        let addr = self.host_addr.map(|a| format!("{a}/")).unwrap_or_default();
        [
            flag.to_string(),
            format!("{addr}{}:{}", self.host_port, self.guest_port),
        ]
    }
}

impl std::fmt::Display for HostFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            FwdProtocol::Tcp => "tcp",
            FwdProtocol::Udp => "udp",
        };
        let addr = self.host_addr.map(|a| a.to_string()).unwrap_or_default();
        write!(f, "{proto}:{addr}:{}-:{}", self.host_port, self.guest_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_forms_parse() {
        let f = HostFwd::parse("tcp:8080-:80").unwrap();
        assert_eq!(
            (f.protocol, f.host_addr, f.host_port, f.guest_port),
            (FwdProtocol::Tcp, None, 8080, 80)
        );
        assert_eq!(f.passt_args(), ["-t".to_string(), "8080:80".to_string()]);
        let f = HostFwd::parse("udp:127.0.0.1:5353-:53").unwrap();
        assert_eq!(f.host_addr, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            f.passt_args(),
            ["-u".to_string(), "127.0.0.1/5353:53".to_string()]
        );
        assert_eq!(HostFwd::parse("tcp::2222-:22").unwrap().host_port, 2222);
        assert_eq!(
            HostFwd::parse(":2222-:22").unwrap().protocol,
            FwdProtocol::Tcp
        );
        assert_eq!(
            HostFwd::parse("tcp:8080-:80").unwrap().to_string(),
            "tcp::8080-:80"
        );
    }

    #[test]
    fn bad_forwards_say_what_is_wrong() {
        for (text, why) in [
            ("tcp:abc-:80", "the host port \"abc\" is not a number"),
            ("tcp:8080-:0", "the guest port \"0\""),
            ("tcp:8080-:", "the guest port is missing"),
            ("tcp:8080:80", "no '-'"),
            ("sctp:1-:2", "unknown protocol \"sctp\""),
            ("8080", "no protocol"),
            ("tcp:8080-10.0.2.15:80", "guest address"),
            ("tcp:1.2.3:8080-:80", "not an IPv4 address"),
            ("tcp:70000-:80", "from 1 to 65535"),
        ] {
            let e = HostFwd::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
