//! User-mode networking end to end: `alcazar run --net user,hostfwd=...`
//! run by an unprivileged user (`nobody`, through `setpriv`), on the emu
//! engine with the seccomp sandbox on. The VMM starts passt; the guest's
//! `/init` gets an address by DHCP (`alcazar.net=dhcp`); the guest
//! fetches a file from an HTTP server on the host's loopback through the
//! gateway address (passt maps it to 127.0.0.1); the host then connects
//! to the forwarded port on 127.0.0.1 and reaches a guest `nc -l` that
//! echoes what it gets. Both directions' bytes are checked byte for byte:
//! the guest sends the downloaded file back to a second host server (an
//! outbound connection, guest to host), and the host compares the echo
//! through the forward with what it sent. Nothing of passt's is left once
//! the VMM has exited.
//!
//! Needs passt (`apt-get install passt`), root (to become `nobody`) and
//! setpriv: without them the test fails under `ALCAZAR_REQUIRE_PASST=1`
//! (CI sets it) and says SKIPPED loudly otherwise.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Guest;

/// Bytes the host's HTTP server sends the guest.
const DOWNLOAD: usize = 384 * 1024;
/// Bytes the host sends through the forward (echoed back).
const UPLOAD: usize = 256 * 1024;
/// The guest port of the forward.
const GUEST_PORT: u16 = 8080;

/// Whether this test can run; fails under ALCAZAR_REQUIRE_PASST=1.
fn can_run(test: &str) -> bool {
    let passt = Command::new("passt").arg("--version").output().is_ok();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = match (passt, setpriv, root) {
        (false, _, _) => "passt is not installed (apt-get install passt)",
        (_, false, _) => "setpriv is missing (util-linux)",
        (_, _, false) => "not root: cannot run the VMM as nobody",
        _ => return true,
    };
    if std::env::var("ALCAZAR_REQUIRE_PASST").as_deref() == Ok("1") {
        panic!("{test}: required (ALCAZAR_REQUIRE_PASST=1) but {missing}");
    }
    eprintln!("SKIPPED {test}: {missing}");
    false
}

/// Test data: deterministic, not compressible.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Takes one connection on `listener` and sends what it read to the end.
fn sink(listener: TcpListener) -> std::sync::mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let got = listener.accept().and_then(|(mut s, _)| {
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            let mut v = Vec::new();
            s.read_to_end(&mut v).map(|_| v)
        });
        let _ = tx.send(got.map_err(|e| e.to_string()));
    });
    rx
}

/// Serves `body` to every HTTP request on `listener` (HTTP/1.0, one
/// request per connection).
fn serve_http(listener: TcpListener, body: Vec<u8>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut out = &stream;
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
}

/// A directory `nobody` owns.
fn nobody_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alcazar-usernet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let status = Command::new("chown")
        .args(["nobody:nogroup"])
        .arg(&dir)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown nobody {dir:?}");
    dir
}

/// Copies of the default guest's kernel and initramfs that `nobody` can
/// read (the cache lives in root's home).
fn guest_copies(dir: &Path) -> (PathBuf, PathBuf) {
    let (kernel, initrd) = common::default_guest_paths("cloud");
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).expect("copying the guest");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        to
    };
    (copy(&kernel, "vmlinuz"), copy(&initrd, "initrd.img"))
}

/// A free TCP port on the host's loopback (free when asked).
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
    l.local_addr().expect("its address").port()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn an_unprivileged_vmm_gives_its_guest_dhcp_outbound_tcp_and_a_port_forward_through_passt() {
    let test =
        "an_unprivileged_vmm_gives_its_guest_dhcp_outbound_tcp_and_a_port_forward_through_passt";
    if !can_run(test) {
        return;
    }
    let home = nobody_dir("home");
    let runtime = nobody_dir("run");
    let (kernel, initrd) = guest_copies(&home);

    let download = data(DOWNLOAD, 0x1234_5678);
    let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("an HTTP port");
    let http_port = http.local_addr().expect("its address").port();
    serve_http(http, download.clone());
    let back = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a sink port");
    let back_port = back.local_addr().expect("its address").port();
    let returned = sink(back);
    let host_port = free_port();

    // The guest fetches from the gateway (the host's loopback through
    // passt), sends it back to another host server the same way, then
    // echoes one connection on 8080.
    let script = format!(
        "gw=$(ip route | awk '/^default/ {{print $3}}'); echo GATEWAY $gw; \
         echo ADDR $(ip -4 addr show eth0 | awk '/inet / {{print $2}}'); \
         grep -q nameserver /etc/resolv.conf && echo RESOLV-OK; \
         wget -q -O /tmp/got http://$gw:{http_port}/blob && \
         echo GOT $(wc -c < /tmp/got) && nc $gw {back_port} < /tmp/got && echo SENT-BACK && \
         (nc -l -p {GUEST_PORT} -e /bin/cat &) && sleep 1 && echo NC-READY && \
         n=0; while pidof nc >/dev/null && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done; \
         echo NC-DONE"
    );
    let net = format!("user,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_PORT}");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_alcazar"))
        .args(["run", "--engine", "emu", "--api-socket", "none"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "console=ttyS0 quiet cryptomgr.notests"])
        .args(["--net", &net, "--exec", &script])
        .env("RUST_LOG", "warn")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_CACHE_HOME", home.join("cache"));
    let started = Instant::now();
    let mut g = Guest::start_with(command);
    let (ready, _) = g.expect_line("ALCAZAR-READY");
    assert_eq!(ready, "ALCAZAR-READY");
    let booted = started.elapsed();

    let (got, _) = g.expect_line("GOT ");
    let fetched = started.elapsed() - booted;
    assert_eq!(
        got,
        format!("GOT {DOWNLOAD}"),
        "the guest received every byte"
    );
    g.expect_line("SENT-BACK");
    let sent_back = returned
        .recv_timeout(Duration::from_secs(60))
        .expect("the sink finished")
        .expect("the sink read a whole connection");
    let round_trip = started.elapsed() - booted;
    assert_eq!(sent_back.len(), DOWNLOAD, "the guest sent every byte back");
    assert!(
        sent_back == download,
        "the guest got and returned the exact bytes"
    );

    g.expect_line("NC-READY");
    // The host reaches the guest's server through the forward: send,
    // read the echo on a second thread so neither side's buffer stalls.
    let upload = data(UPLOAD, 0x9abc_def1);
    let t0 = Instant::now();
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, host_port)).expect("the forward");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut reader = stream.try_clone().expect("a second handle");
    let echo = std::thread::spawn(move || {
        let mut back = Vec::new();
        let r = reader.read_to_end(&mut back);
        (back, r.map_err(|e| e.to_string()))
    });
    (&stream)
        .write_all(&upload)
        .expect("sending through the forward");
    stream.shutdown(Shutdown::Write).expect("half close");
    let (back, result) = echo.join().expect("the reader");
    let echoed = t0.elapsed();
    assert!(result.is_ok(), "reading the echo: {result:?}");
    assert_eq!(back.len(), UPLOAD, "every byte came back");
    assert!(back == upload, "the echo is the bytes sent");

    let (status, lines, stderr) = g.finish();
    let text = lines.join("\n");
    assert_eq!(status, Some(0), "stdout:\n{text}\nstderr: {stderr}");
    assert!(text.contains("alcazar-dhcp: eth0 "), "DHCP applied: {text}");
    assert!(text.contains("RESOLV-OK"), "DNS from the lease: {text}");
    assert!(text.contains("NC-DONE"), "{text}");
    eprintln!(
        "user_net: boot {booted:?}; {DOWNLOAD} bytes host->guest (HTTP) in {fetched:?}, \
         and back guest->host by {round_trip:?}; {UPLOAD} bytes each way through the \
         forward in {echoed:?}"
    );

    // Nothing of passt's is left: no process, no socket directory.
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .expect("the runtime directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "passt's directory is removed: {left:?}");
    let procs = processes_mentioning(&runtime.to_string_lossy());
    assert!(procs.is_empty(), "passt has ended: {procs:?}");
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&runtime);
}

#[test]
fn a_missing_passt_is_one_line_naming_the_package() {
    let empty = std::env::temp_dir().join(format!("alcazar-nopath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("an empty directory");
    let out = common::alcazar()
        .args(["run", "--kit", "real-hello", "--net", "user"])
        .env("PATH", &empty)
        .output()
        .expect("alcazar runs");
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("passt is not installed") && errors[0].contains("apt-get install passt"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}
