//! What the Linux integration tests share: starting `alcazar`, reading
//! the guest console line by line, and the cached guest's facts.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest a boot may take before a test gives up (the CI machine is slow
/// and shared: the boots run in parallel).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn alcazar() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alcazar"));
    c.env("RUST_LOG", "warn");
    c
}

/// `alcazar ARGS` with stdin, stdout and stderr piped.
pub fn spawn_piped(args: &[&str]) -> Child {
    alcazar()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alcazar starts")
}

/// A running `alcazar` whose stdout lines arrive, stamped with the host's
/// wall-clock time, on a channel.
pub struct Guest {
    child: Child,
    lines: mpsc::Receiver<(String, SystemTime)>,
    seen: Vec<String>,
}

impl Guest {
    pub fn start(args: &[&str]) -> Guest {
        Guest::start_with({
            let mut c = alcazar();
            c.args(args);
            c
        })
    }

    /// Like [`Guest::start`], for full-screen output (a bootloader's
    /// menu): the output is split into "lines" at escape sequences and
    /// carriage returns too, so text drawn by cursor positioning is seen
    /// as soon as it is drawn. Bytes that are not UTF-8 are replaced.
    #[allow(dead_code)]
    pub fn start_screen(args: &[&str]) -> Guest {
        let mut command = alcazar();
        command.args(args);
        Guest::spawn(command, true)
    }

    /// Starts `command` (an `alcazar` invocation) with piped stdio.
    pub fn start_with(command: Command) -> Guest {
        Guest::spawn(command, false)
    }

    /// `alcazar ARGS` on a pseudo-terminal (util-linux `script` makes one
    /// and relays it to pipes), as a person at a terminal runs it; the
    /// output is split for screens as in [`Guest::start_screen`].
    pub fn start_on_terminal(args: &[&str]) -> Guest {
        let mut line = env!("CARGO_BIN_EXE_alcazar").to_string();
        for a in args {
            line.push_str(" '");
            line.push_str(&a.replace('\'', "'\\''"));
            line.push('\'');
        }
        let mut command = Command::new("script");
        command
            .args(["-q", "-f", "-e", "-c", &line, "/dev/null"])
            .env("RUST_LOG", "warn");
        Guest::spawn(command, true)
    }

    fn spawn(mut command: Command, screen: bool) -> Guest {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("alcazar starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut piece = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                let end = match reader.read(&mut byte) {
                    Ok(0) | Err(_) => true,
                    Ok(_) => false,
                };
                let split =
                    end || byte[0] == b'\n' || (screen && (byte[0] == b'\r' || byte[0] == 0x1b));
                if !split {
                    piece.push(byte[0]);
                    continue;
                }
                if !piece.is_empty() || (!screen && !end) {
                    if !screen && piece.last() == Some(&b'\r') {
                        piece.pop();
                    }
                    let line = String::from_utf8_lossy(&piece).into_owned();
                    piece.clear();
                    if tx.send((line, SystemTime::now())).is_err() {
                        return;
                    }
                }
                if end {
                    return;
                }
            }
        });
        Guest {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it and when it came.
    pub fn expect_line(&mut self, needle: &str) -> (String, SystemTime) {
        self.expect_line_matching(|l| l.contains(needle))
    }

    /// Waits for a line `matches` accepts (leading and trailing white
    /// space and carriage returns removed first).
    pub fn expect_line_matching(&mut self, matches: impl Fn(&str) -> bool) -> (String, SystemTime) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut exited_at: Option<Instant> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((line, at)) => {
                    self.seen.push(line.clone());
                    let trimmed = line.trim();
                    if matches(trimmed) {
                        return (trimmed.to_string(), at);
                    }
                }
                // A VMM that has exited prints nothing more: say so
                // (once its last lines had a moment to arrive) instead of
                // waiting for a line that cannot come.
                Err(_) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        let t = *exited_at.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_secs(2) {
                            panic!(
                                "the VMM exited ({status}) without printing the expected line; stdout:\n{}\nstderr:\n{}",
                                self.seen.join("\n"),
                                self.stderr()
                            );
                        }
                    }
                }
                Err(_) => {
                    let threads = hang_report(self.child.id());
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "no expected line; stdout so far:\n{}\nstderr:\n{}\n{threads}",
                        self.seen.join("\n"),
                        self.stderr()
                    );
                }
            }
        }
    }

    /// Writes raw bytes to the process's stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(bytes).expect("console input");
        stdin.flush().expect("console input");
    }

    pub fn type_line(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(text.as_bytes()).expect("console input");
        stdin.write_all(b"\n").expect("console input");
        stdin.flush().expect("console input");
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Boots `alcazar ARGS` (a Linux guest), waits for the ready marker and
    /// for the VMM to exit with status 0; returns the console lines.
    pub fn run_ok(args: &[&str]) -> Vec<String> {
        let mut g = Guest::start(args);
        g.expect_line("ALCAZAR-READY");
        let (status, lines, stderr) = g.finish();
        assert_eq!(
            status,
            Some(0),
            "stdout:\n{}\nstderr: {stderr}",
            lines.join("\n")
        );
        lines
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the VMM with SIGKILL (no clean-up of any kind runs) and
    /// reaps it; returns how it ended.
    pub fn kill_now(&mut self) -> std::process::ExitStatus {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("the killed VMM is reaped")
    }

    /// Waits for the VMM to exit; returns its status, the rest of stdout
    /// and stderr.
    pub fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                // Look at the stuck VMM, kill it so stderr ends, then
                // show every line the guest printed (not only those a
                // test waited for).
                let threads = hang_report(self.child.id());
                let _ = self.child.kill();
                let _ = self.child.wait();
                while let Ok((line, _)) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.seen.push(line);
                }
                panic!(
                    "the VMM did not exit; stdout:\n{}\nstderr:\n{}\n{threads}",
                    self.seen.join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok((line, _)) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let stderr = self.stderr();
        (status.code(), self.seen, stderr)
    }
}

/// The sum of every number named `instructions` in a telemetry JSON
/// snapshot (retired guest instructions, all vCPUs).
pub fn sum_instructions(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, child)| match child {
                serde_json::Value::Number(n) if k == "instructions" => n.as_u64().unwrap_or(0),
                serde_json::Value::Array(items) if k == "instructions" => {
                    items.iter().filter_map(|i| i.as_u64()).sum()
                }
                other => sum_instructions(other),
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(sum_instructions).sum(),
        _ => 0,
    }
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The path of the host program `name` (on `PATH`, or in `/usr/sbin` or
/// `/sbin`, where Debian keeps e2fsprogs); a missing one fails the test
/// naming the Debian `package` that has it.
pub fn host_tool(name: &str, package: &str) -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: this test needs it on the host; \
                 apt-get install {package} (.ci/run does)"
            )
        })
}

/// A fresh scratch directory `alcazar-NAME-PID` in the temporary
/// directory, removed (with what the test put there) when dropped, also
/// when the test fails.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("alcazar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A GRUB boot tree for the default guest in `dir/root`: the kernel and
/// initramfs as `boot/vmlinuz` and `boot/initrd.img`, and `cfg` as
/// `boot/grub/grub.cfg`. Returns the tree's root.
pub fn grub_tree(dir: &std::path::Path, cfg: &str) -> std::path::PathBuf {
    let (kernel, initrd) = default_guest_paths("cloud");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).expect("boot tree");
    std::fs::copy(kernel, root.join("boot/vmlinuz")).expect("kernel");
    std::fs::copy(initrd, root.join("boot/initrd.img")).expect("initrd");
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg).expect("grub.cfg");
    root
}

/// A bootable GRUB CD image (`grub-mkrescue`: El Torito, also an MBR
/// disk) of [`grub_tree`] with `cfg`, as `dir/guest.iso`. Needs
/// grub-pc-bin, grub-common, xorriso and mtools (`.ci/run` installs them);
/// without them the test fails saying so.
pub fn grub_cd(dir: &std::path::Path, cfg: &str) -> std::path::PathBuf {
    let root = grub_tree(dir, cfg);
    let image = dir.join("guest.iso");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&image)
        .arg(&root)
        .output()
        .expect(
            "grub-mkrescue is missing: apt-get install grub-pc-bin grub-common xorriso mtools \
             (.ci/run does)",
        );
    assert!(
        out.status.success(),
        "grub-mkrescue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// The cached default guest's kernel and initramfs (`alcazar guest
/// path`), fetching the guest if needed.
#[allow(dead_code)]
pub fn default_guest_paths(flavor: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    guest_kernel_release(flavor);
    let out = alcazar()
        .args(["guest", "path", "--flavor", flavor])
        .output()
        .expect("guest path runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let kernel = lines.next().expect("the kernel's path").into();
    let initrd = lines.next().expect("the initramfs's path").into();
    (kernel, initrd)
}

/// The cached default guest's kernel release (fetching it if needed).
pub fn guest_kernel_release(flavor: &str) -> String {
    let out = alcazar()
        .args(["guest", "fetch", "--flavor", flavor])
        .output()
        .expect("guest fetch runs");
    assert!(
        out.status.success(),
        "guest fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = alcazar()
        .args(["guest", "ls"])
        .output()
        .expect("guest ls runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(flavor))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("6.") || w.contains("-amd64"))
        })
        .map(|w| {
            w.trim_matches(|c: char| c == ',' || c == '(' || c == ')')
                .to_string()
        })
        .unwrap_or_else(|| panic!("no {flavor} guest in `guest ls`: {text}"))
}

/// The counts of `/proc/interrupts` line `name` (summed over CPUs).
pub fn interrupt_count(lines: &[String], name: &str) -> u64 {
    lines
        .iter()
        .find(|l| l.trim_end().ends_with(name))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|w| w.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", lines.join("\n")))
}

/// Whether /dev/kvm opens here; says why not (or fails the test under
/// `ALCAZAR_REQUIRE_KVM=1`, as CI sets it).
pub fn kvm_available(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("{test}: kvm required (ALCAZAR_REQUIRE_KVM=1) but /dev/kvm does not open");
        }
        eprintln!("SKIPPED {test}: /dev/kvm does not open");
    }
    ok
}

/// What a VMM that stopped making progress is doing: each thread's name,
/// state and kernel wait channel, then (when gdb is installed, as CI
/// installs it) every thread's backtrace. A hang seen once on a loaded
/// CI machine is then a deadlock or a guest stall, not a mystery.
pub fn hang_report(pid: u32) -> String {
    let mut out = format!("threads of the VMM (pid {pid}):\n");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let stat = read("stat");
        // The state is the field after the parenthesised name.
        let state = stat.rsplit(") ").next().and_then(|r| r.split(' ').next());
        out += &format!(
            "  {:>7} {:<16} {} {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            state.unwrap_or("?"),
            read("wchan").trim()
        );
    }
    let gdb = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "thread apply all bt 16"])
        .stdin(Stdio::null())
        .output();
    match gdb {
        Ok(o) if o.status.success() => out += &String::from_utf8_lossy(&o.stdout),
        Ok(o) => out += &format!("(gdb gave no backtraces: {})\n", o.status),
        Err(e) => out += &format!("(no backtraces: {e})\n"),
    }
    out
}

/// Waits up to `timeout` for `child` to exit and collects its output
/// (read on threads, so a full pipe cannot stall it); if it is still
/// running, kills it and returns its [`hang_report`].
pub fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    use std::io::Read;
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let report = hang_report(child.id());
        let _ = child.kill();
        let _ = child.wait();
        return Err(report);
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
