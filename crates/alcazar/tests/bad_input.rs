//! Bad input, table-driven: every case runs `alcazar` in a scratch
//! directory holding a few files of the user's (one precious text file, a
//! disk image, a directory, a dangling link, a config), and checks the
//! rules every refusal follows: exactly one line on stderr that names the
//! value and the problem, status 2 (a usage error), nothing on stdout, and
//! the user's files exactly as they were, nothing added.
//!
//! The cases are the findings of a hostile review (data loss, hangs,
//! misleading errors); each was wrong before its fix.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory with the user's files.
struct Scene {
    dir: PathBuf,
}

impl Scene {
    fn new(name: &str) -> Scene {
        let dir = std::env::temp_dir().join(format!("alcazar-bad-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("subdir")).unwrap();
        std::fs::write(dir.join("precious.txt"), "the user's data\n").unwrap();
        std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(dir.join("odd.img"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("small-kernel"), vec![0x55u8; 600]).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
        std::fs::write(
            dir.join("typo.toml"),
            "[boot]\nkind = \"kit\"\nprogram = \"long-hello\"\n[[device]]\nclass = \"serial\"\nprot = 0x2f8\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("dup.toml"),
            "memory = \"32M\"\ncpus = 1\nmemory = \"64M\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("huge.toml"), "cpus = 99999999999999999999999\n").unwrap();
        std::fs::write(
            dir.join("badid.toml"),
            "[boot]\nkind = \"kit\"\n[[device]]\nclass = \"virtio-rng\"\nid = \"a/../b\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("zeromac.toml"),
            "[boot]\nkind = \"kit\"\n[[device]]\nclass = \"virtio-net\"\nmac = \"00:00:00:00:00:00\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("usertap.toml"),
            "[boot]\nkind = \"kit\"\n[[device]]\nclass = \"virtio-net\"\nuser = true\ntap = \"tap0\"\n",
        )
        .unwrap();
        Scene { dir }
    }

    /// Every entry below the directory: its kind and contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let what = if meta.file_type().is_symlink() {
                    format!("link -> {}", std::fs::read_link(&p).unwrap().display())
                } else if meta.is_dir() {
                    stack.push(p.clone());
                    "dir".into()
                } else {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    format!("file {} bytes, {:x}", bytes.len(), fnv(&bytes))
                };
                out.insert(p.strip_prefix(&self.dir).unwrap().to_path_buf(), what);
            }
        }
        out
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One bad input: the arguments (run in the scene's directory) and what
/// the one error line must contain.
struct Case {
    args: &'static [&'static str],
    needles: &'static [&'static str],
}

const fn case(args: &'static [&'static str], needles: &'static [&'static str]) -> Case {
    Case { args, needles }
}

/// The cases. `--kit long-hello` keeps a run from fetching the default
/// guest when the refusal would come too late.
const CASES: &[Case] = &[
    // Data loss: only a stale socket may be replaced.
    case(
        &["run", "--kit", "long-hello", "--api-socket", "precious.txt"],
        &["precious.txt", "regular file"],
    ),
    case(
        &["run", "--kit", "long-hello", "--api-socket", "subdir"],
        &["subdir", "directory"],
    ),
    case(
        &["run", "--kit", "long-hello", "--api-socket", "dangling"],
        &["dangling", "symbolic link"],
    ),
    case(
        &["run", "--kit", "long-hello", "--api-socket", "nodir/x.sock"],
        &["nodir", "does not exist"],
    ),
    case(
        &[
            "run",
            "--kit",
            "long-hello",
            "--api-socket",
            "a-socket-path-that-is-far-too-long-for-sun-path-a-socket-path-that-is-far-too-long-for-sun-path-xxxxxxxxx.sock",
        ],
        &["more than the 107"],
    ),
    // Data loss: one image, two writers.
    case(
        &["run", "--kit", "long-hello", "--disk", "disk.img", "--disk", "disk.img"],
        &["disk.img", "in use by this VM"],
    ),
    // Hangs.
    case(&["run", "/dev/zero"], &["/dev/zero", "not a regular file"]),
    case(&["run", "--kernel", "/dev/zero"], &["/dev/zero", "not a regular file"]),
    case(&["run", "--exec", ""], &["--exec", "empty command"]),
    // Misleading errors.
    case(&["run", "--kernel", "small-kernel"], &["small-kernel", "not a Linux kernel"]),
    case(&["run", "--kernel", "/dev/null"], &["/dev/null", "not a regular file"]),
    case(&["run", "--kernel", "subdir"], &["subdir", "is a directory"]),
    case(
        &["run", "--kit", "long-hello", "--serial", "file:subdir"],
        &["subdir", "is a directory"],
    ),
    case(
        &["run", "--kit", "long-hello", "--serial", "file:/dev/full"],
        &["/dev/full", "not a regular file"],
    ),
    case(
        &["run", "--kit", "long-hello", "--serial", "file:/proc/version"],
        &["/proc/version", "kernel interface"],
    ),
    case(
        &["run", "--kit", "long-hello", "--disk", "/dev/null"],
        &["/dev/null", "not a regular file or a block device"],
    ),
    case(
        &["run", "--kit", "long-hello", "--disk", "odd.img"],
        &["odd.img", "not a multiple of 512"],
    ),
    case(&["run", "typo.toml"], &["device[0].prot", "port"]),
    case(&["run", "dup.toml"], &["line 3", "memory"]),
    case(&["run", "huge.toml"], &["cpus", "line 1"]),
    case(&["run", "badid.toml"], &["a/../b", "not a valid device id"]),
    case(&["run", "zeromac.toml"], &["00:00:00:00:00:00", "not a unicast MAC"]),
    case(&["run", "--kit", "long-hello", "--net", "tap=lo"], &["lo", "not a TAP"]),
    case(
        &["run", "--kit", "long-hello", "--net", "user,hostfwd=tcp:abc-:80"],
        &["hostfwd", "tcp:abc-:80", "host port \"abc\"", "HOSTPORT-:GUESTPORT"],
    ),
    case(
        &["run", "--kit", "long-hello", "--net", "user,hostfwd=tcp:8080-10.0.2.15:80"],
        &["hostfwd", "guest address", "HOSTPORT-:GUESTPORT"],
    ),
    case(
        &["run", "--kit", "long-hello", "--net", "tap,hostfwd=tcp:8080-:80"],
        &["--net", "hostfwd does not go with tap", "user["],
    ),
    case(
        &["run", "--kit", "long-hello", "--net", "passt=nosuch.socket"],
        &["nosuch.socket", "cannot connect to passt", "start passt first"],
    ),
    case(&["run", "usertap.toml"], &["device[0].tap", "TAP setting on a card backed by passt"]),
    case(
        &["run", "--kit", "long-hello", "--emu-tier", "fast"],
        &["fast", "unknown emu tier", "interp"],
    ),
    case(
        &["run", "--kit", "long-hello", "--emu-code-cache", "4G"],
        &["4G", "out of range", "1M to 1G"],
    ),
    case(&["run", "--cdrom", "disk.img"], &["disk.img", "ISO 9660"]),
    case(&["run", "--firmware", "uefi"], &["uefi", "unknown firmware"]),
    case(
        &["run", "--kit", "long-hello", "--cpu", "v9"],
        &["--cpu", "\"v9\"", "unknown CPU level"],
    ),
    case(
        &["run", "--kit", "long-hello", "--cpu", "v2,-avx512f"],
        &["--cpu", "-avx512f", "not a feature to remove", "sse4_2"],
    ),
    case(
        &["run", "--disk", "disk.img", "--boot", "disk0,cd0"],
        &["\"cd0\"", "not a disk or CD-ROM drive", "disk0"],
    ),
    case(
        &["run", "--kit", "long-hello", "--disk", "disk.img,if=scsi"],
        &["if=scsi", "unknown option"],
    ),
    case(&["run", "--memroy", "64M"], &["--memroy", "--memory"]),
    case(&["frobnicate"], &["frobnicate"]),
    case(&["inspect", "nosuchvm", "cpu0/regs/rax", "--set", "zzz"], &["zzz", "not a number"]),
];

#[test]
fn every_bad_input_is_one_line_status_2_and_changes_nothing() {
    let mut failures = Vec::new();
    for (n, c) in CASES.iter().enumerate() {
        let scene = Scene::new(&n.to_string());
        let before = scene.snapshot();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_alcazar"))
            .args(c.args)
            .current_dir(&scene.dir)
            .stdin(Stdio::null())
            .output()
            .expect("alcazar runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().collect();
        let mut wrong = Vec::new();
        if out.status.code() != Some(2) {
            wrong.push(format!("status {:?}", out.status.code()));
        }
        if lines.len() != 1 {
            wrong.push(format!("{} lines on stderr", lines.len()));
        }
        for needle in c.needles {
            if !stderr.contains(needle) {
                wrong.push(format!("no {needle:?}"));
            }
        }
        if !out.stdout.is_empty() {
            wrong.push("output on stdout".into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            wrong.push(format!("took {:?}", started.elapsed()));
        }
        let after = scene.snapshot();
        if after != before {
            wrong.push(format!("files changed: {before:?} -> {after:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{:?}: {} | {}",
                c.args,
                wrong.join(", "),
                stderr.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Five `run --detach --name race` at once: exactly one VM starts and
/// reports success; the others fail at once with one line; the log holds
/// only the winner's lines.
#[test]
fn parallel_detached_starts_of_one_name_start_one_vm() {
    let scene = Scene::new("race");
    let name = format!("race-{}", std::process::id());
    let children: Vec<_> = (0..5)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_alcazar"))
                .args([
                    "run", "--detach", "--name", &name, "--kit", "spinner", "--engine", "emu",
                    "--serial", "none",
                ])
                .current_dir(&scene.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("alcazar runs")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("waits"))
        .collect();
    let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let stop = || {
        let _ = Command::new(env!("CARGO_BIN_EXE_alcazar"))
            .args(["stop", &name, "--force"])
            .output();
    };
    if winners.len() != 1 {
        stop();
    }
    assert_eq!(winners.len(), 1, "{outs:?}");
    assert_eq!(String::from_utf8_lossy(&winners[0].stdout).trim(), name);
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("running"), "{err}");
    }
    let log = alcazar_control::api::runtime::socket_dir().join(format!("{name}.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    stop();
    assert_eq!(
        text.matches("--- alcazar run --detach").count(),
        1,
        "one start in the log:\n{text}"
    );
    let _ = std::fs::remove_file(&log);
}

/// `--detach` with a socket in a shared directory: the log goes to the
/// private runtime directory, never next to the socket (where another
/// user could plant a link), and the success line names the socket path
/// that `stop` reaches.
#[test]
fn a_detached_vm_on_a_custom_socket_keeps_its_log_private_and_is_reachable() {
    let scene = Scene::new("custom");
    // What a hostile user could plant next to a shared socket path.
    std::os::unix::fs::symlink(scene.dir.join("precious.txt"), scene.dir.join("vm.log")).unwrap();
    let before = std::fs::read(scene.dir.join("precious.txt")).unwrap();
    let name = format!("custom-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args([
            "run",
            "--detach",
            "--name",
            &name,
            "--api-socket",
            "vm.sock",
            "--kit",
            "spinner",
            "--engine",
            "emu",
            "--serial",
            "none",
        ])
        .current_dir(&scene.dir)
        .stdin(Stdio::null())
        .output()
        .expect("alcazar runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "./vm.sock", "the handle the verbs take");
    let stop = Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args(["stop", &stdout, "--force"])
        .current_dir(&scene.dir)
        .output()
        .expect("stop runs");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(
        std::fs::read(scene.dir.join("precious.txt")).unwrap(),
        before
    );
    let log = alcazar_control::api::runtime::socket_dir().join(format!("{name}.log"));
    assert!(log.exists(), "the log is in the runtime directory");
    let _ = std::fs::remove_file(log);
}
