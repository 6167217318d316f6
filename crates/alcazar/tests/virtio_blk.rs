//! virtio-blk end to end: the host builds an ext4 image holding a file
//! (`mke2fs -d`, e2fsprogs), a Linux guest on the emu engine mounts
//! `/dev/vda`, checks the file's SHA-256, writes a new file and syncs;
//! the host then reads that file out of the image with `debugfs`. With
//! `--disk PATH,readonly` the guest sees a read-only disk, its writes
//! fail, and the image's bytes do not change.
//!
//! The tests need `mke2fs` and `debugfs` on the host (`.ci/run`
//! installs e2fsprogs); without them they fail and say so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{interrupt_count, Guest};

/// An e2fsprogs tool, found on PATH or in the sbin directories a
/// non-root PATH may lack.
fn tool(name: &str) -> PathBuf {
    common::host_tool(name, "e2fsprogs")
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("alcazar-vblk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 200 KiB of bytes that are not all alike (a few extents' worth).
fn payload() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..200 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// A 32 MiB ext4 image holding `data.bin` (the payload); returns the
/// image path and the payload's SHA-256.
fn make_image(scratch: &Scratch) -> (PathBuf, String) {
    let file = scratch.0.join("root/data.bin");
    std::fs::write(&file, payload()).expect("payload written");
    let digest = sha256_hex(&file);
    let image = scratch.0.join("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(32 << 20))
        .expect("image created");
    let out = Command::new(tool("mke2fs"))
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(scratch.0.join("root"))
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .expect("mke2fs runs");
    assert!(
        out.status.success(),
        "mke2fs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (image, digest)
}

/// `debugfs -R 'cat FILE' IMAGE`: the file's bytes as the host reads them.
fn debugfs_cat(image: &Path, file: &str) -> Vec<u8> {
    let out = Command::new(tool("debugfs"))
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .expect("debugfs runs");
    assert!(
        out.status.success(),
        "debugfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn line_after<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", lines.join("\n")))
        .trim()
}

#[test]
fn guest_reads_and_writes_an_ext4_disk() {
    let scratch = Scratch::new("rw");
    let (image, digest) = make_image(&scratch);
    let script = "echo SERIAL $(cat /sys/block/vda/serial); \
         echo RO $(cat /sys/block/vda/ro); \
         mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || exit 10; \
         echo SUM $(sha256sum /mnt/data.bin); \
         i=0; while [ $i -lt 100 ]; do echo \"line $i written by the guest\"; i=$((i+1)); done > /mnt/newfile; \
         cp /mnt/data.bin /mnt/copy.bin; \
         sync; umount /mnt || exit 11; \
         cat /proc/interrupts";
    let disk = image.to_string_lossy().into_owned();
    let lines = Guest::run_ok(&["run", "--engine", "emu", "--disk", &disk, "--exec", script]);
    let text = lines.join("\n");
    assert_eq!(
        line_after(&lines, "SERIAL "),
        "disk0",
        "GET_ID gives the device id"
    );
    assert_eq!(line_after(&lines, "RO "), "0");
    let sum = line_after(&lines, "SUM ");
    assert!(
        sum.starts_with(&digest),
        "guest read {sum}, host wrote {digest}"
    );
    assert!(interrupt_count(&lines, "virtio0-req.0") > 0, "{text}");

    let expected: String = (0..100)
        .map(|i| format!("line {i} written by the guest\n"))
        .collect();
    let newfile = debugfs_cat(&image, "/newfile");
    assert_eq!(String::from_utf8_lossy(&newfile), expected);
    assert_eq!(debugfs_cat(&image, "/copy.bin"), payload());
}

#[test]
fn a_readonly_disk_cannot_be_written() {
    let scratch = Scratch::new("ro");
    let (image, digest) = make_image(&scratch);
    let before = sha256_hex(&image);
    let script = "echo RO $(cat /sys/block/vda/ro); mkdir -p /mnt; \
         mount -t ext4 -o rw /dev/vda /mnt 2>/dev/null && grep -q ' /mnt ext4 rw' /proc/mounts \
           && echo RWMOUNT yes || echo RWMOUNT no; \
         umount /mnt 2>/dev/null; \
         mount -t ext4 -o ro /dev/vda /mnt || exit 10; \
         echo SUM $(sha256sum /mnt/data.bin); \
         echo x > /mnt/newfile && echo FILEWRITE yes || echo FILEWRITE no; \
         dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=1 oflag=direct 2>/dev/null \
           && echo RAWWRITE yes || echo RAWWRITE no; \
         umount /mnt";
    let disk = format!("{},readonly", image.display());
    let lines = Guest::run_ok(&["run", "--engine", "emu", "--disk", &disk, "--exec", script]);
    let text = lines.join("\n");
    assert_eq!(
        line_after(&lines, "RO "),
        "1",
        "VIRTIO_BLK_F_RO reaches the guest"
    );
    assert_eq!(line_after(&lines, "RWMOUNT "), "no", "{text}");
    assert!(line_after(&lines, "SUM ").starts_with(&digest), "{text}");
    assert_eq!(line_after(&lines, "FILEWRITE "), "no", "{text}");
    assert_eq!(line_after(&lines, "RAWWRITE "), "no", "{text}");
    assert_eq!(sha256_hex(&image), before, "the read-only image changed");
}

#[test]
fn bad_disk_flags_are_one_clear_error() {
    let scratch = Scratch::new("bad");
    let odd = scratch.0.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).expect("odd image");
    let missing = scratch.0.join("missing.img");
    let cases = [
        (odd.display().to_string(), "not a multiple of 512"),
        (missing.display().to_string(), "cannot open disk image"),
        (
            format!("{},rw", odd.display()),
            "use --disk PATH[,readonly][,if=virtio|ide]",
        ),
    ];
    for (flag, want) in cases {
        let out = common::alcazar()
            .args([
                "run",
                "--engine",
                "emu",
                "--kit",
                "real-hello",
                "--disk",
                &flag,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("alcazar runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--disk {flag}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            errors.len(),
            1,
            "one error line for --disk {flag}: {stderr}"
        );
        assert!(errors[0].contains("--disk"), "names the flag: {stderr}");
        assert!(errors[0].contains(want), "--disk {flag}: {stderr}");
    }
}
