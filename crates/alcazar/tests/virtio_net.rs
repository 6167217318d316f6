//! virtio-net end to end: a Linux guest on a TAP interface the VMM
//! creates reaches a TCP server on the host side of the TAP. The guest
//! configures eth0 with busybox `ip`, pings the host, and exchanges data
//! with busybox `nc` (hundreds of frames each way); the test checks both
//! ends: what the server received, and what the guest printed. Once with a
//! TAP the VMM creates and addresses (`--net tap,host=...`), once attached
//! by name to a persistent TAP the test made (`--net tap=NAME`).
//!
//! Needs root (creating a TAP and setting its address needs
//! CAP_NET_ADMIN) and /dev/net/tun. Without them the test fails and says
//! so: CI runs as root.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use alcazar_devices::tap::Tap;
use common::Guest;

/// The host end of the TAP; the guest is .2 on the same /24.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
const GUEST_IP: &str = "10.213.7.2";
const MAC: &str = "52:54:00:a1:b2:c3";
/// Bytes the guest sends after its greeting line.
const GUEST_BULK: usize = 256 * 1024;
/// Bytes the host sends after its reply line.
const HOST_BULK: usize = 200_000;

fn require_root_and_tun() {
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "the virtio-net test needs /dev/net/tun (load the tun module); it does not skip"
    );
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the virtio-net test must run as root: the VMM creates a TAP interface and sets its \
         address (CAP_NET_ADMIN); it does not skip"
    );
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Served {
    peer: std::net::SocketAddr,
    greeting: String,
    bulk: usize,
}

/// Serves one connection: reads a line and [`GUEST_BULK`] bytes, answers
/// with a line and [`HOST_BULK`] bytes, closes.
fn serve(stream: TcpStream) -> std::io::Result<Served> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    let mut bulk = vec![0u8; GUEST_BULK];
    reader.read_exact(&mut bulk)?;
    let zeros = bulk.iter().all(|&b| b == 0);
    let mut out = stream;
    out.write_all(format!("HOST-REPLY zeros={zeros}\n").as_bytes())?;
    out.write_all(&vec![b'x'; HOST_BULK])?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)?;
    Ok(Served {
        peer,
        greeting: greeting.trim().to_string(),
        bulk: bulk.len(),
    })
}

/// One guest run: `--net NET`, eth0 at `guest_ip`/24 pings `host_ip`
/// and exchanges data with a server on the host; both ends checked.
fn exchange_with_host(net: &str, host_ip: Ipv4Addr, guest_ip: &str, mac: &str) {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a host port");
    let port = listener.local_addr().expect("its address").port();
    let (tx, served) = mpsc::channel();
    std::thread::spawn(move || {
        let result = listener.accept().and_then(|(s, _)| serve(s));
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });

    let script = format!(
        "ip link set eth0 up && ip addr add {guest_ip}/24 dev eth0 && \
         echo MAC $(cat /sys/class/net/eth0/address) && \
         ping -c 3 -W 10 {host_ip} && \
         (echo GUEST-HELLO; dd if=/dev/zero bs=1024 count={kib} 2>/dev/null) | \
         nc -w 60 {host_ip} {port} > /tmp/reply && \
         echo REPLY $(head -n 1 /tmp/reply) && echo REPLY-BYTES $(wc -c < /tmp/reply)",
        kib = GUEST_BULK / 1024
    );
    let mut g = Guest::start(&["run", "--engine", "emu", "--net", net, "--exec", &script]);
    g.expect_line("ALCAZAR-READY");
    let (status, lines, stderr) = g.finish();
    let text = lines.join("\n");
    assert_eq!(
        status,
        Some(0),
        "the guest script succeeds; stdout:\n{text}\nstderr: {stderr}"
    );

    // The guest's side.
    assert!(text.contains(&format!("MAC {mac}")), "the MAC: {text}");
    assert!(
        text.contains("3 packets transmitted, 3 packets received"),
        "ping answers: {text}"
    );
    assert!(text.contains("REPLY HOST-REPLY zeros=true"), "{text}");
    let reply_len = "HOST-REPLY zeros=true\n".len() + HOST_BULK;
    assert!(
        text.contains(&format!("REPLY-BYTES {reply_len}")),
        "the guest received all the host's bytes: {text}"
    );

    // The host's side.
    let served = served
        .recv_timeout(Duration::from_secs(10))
        .expect("the server thread finished")
        .expect("the server saw a whole exchange");
    assert_eq!(
        served.peer.ip().to_string(),
        guest_ip,
        "the guest connected"
    );
    assert_eq!(served.greeting, "GUEST-HELLO");
    assert_eq!(served.bulk, GUEST_BULK);
}

#[test]
fn a_guest_on_a_tap_the_vmm_creates_pings_and_exchanges_data_with_a_host_server() {
    require_root_and_tun();
    let net = format!("tap,host={HOST_IP}/24,mac={MAC}");
    exchange_with_host(&net, HOST_IP, GUEST_IP, MAC);
}

/// A persistent TAP made before the VM, removed when dropped.
struct PersistentTap(String);

impl Drop for PersistentTap {
    fn drop(&mut self) {
        if let Ok(t) = Tap::open(&self.0) {
            let _ = t.set_persistent(false);
        }
    }
}

#[test]
fn a_guest_attached_to_an_existing_tap_reaches_the_host() {
    require_root_and_tun();
    let host_ip = Ipv4Addr::new(10, 213, 8, 1);
    let tap = Tap::open("alcazar-e2e").expect("creating the test's tap");
    tap.set_ipv4(host_ip, 24).expect("addressing it");
    tap.set_persistent(true).expect("making it persistent");
    let guard = PersistentTap(tap.name().to_string());
    drop(tap); // the VMM attaches by name, as to a tap an administrator made
    let net = format!("tap={}", guard.0);
    let default_mac = "52:54:00:12:34:56";
    exchange_with_host(&net, host_ip, "10.213.8.2", default_mac);
}

#[test]
fn bad_net_values_are_one_line_usage_errors() {
    for (value, says) in [
        ("usr", "--net = \"usr\": the backend must come first"),
        (
            "user,hostfwd=tcp:abc-:80",
            "--net (hostfwd) = \"tcp:abc-:80\": the host port \"abc\" is not a number",
        ),
        (
            "tap,host=10.0.2.300/24",
            "--net (host_ip) = \"10.0.2.300/24\": not an IPv4 address",
        ),
        (
            "tap,mac=01:00:5e:00:00:01",
            "--net (mac) = \"01:00:5e:00:00:01\": not a unicast MAC",
        ),
    ] {
        let out = common::alcazar()
            .args(["run", "--kit", "real-hello", "--net", value])
            .output()
            .expect("alcazar runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "one error line for {value}: {stderr}");
        assert!(errors[0].contains(says), "{value}: {stderr}");
    }
}
