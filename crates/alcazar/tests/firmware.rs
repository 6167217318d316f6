//! Firmware boot end to end: SeaBIOS (Debian's `bios-256k.bin`) starts at
//! the reset vector, boots a GRUB image made by `grub-mkrescue` from the
//! default guest's kernel and initramfs (as a virtio-blk disk, and as a CD
//! in the IDE controller's ATAPI drive with `--cdrom`), GRUB shows its
//! menu in the terminal, a down-arrow and Enter typed there pick the
//! second entry, and Linux comes up with that entry's command line. A
//! raw disk image with an MBR, an ext4 partition and GRUB boots from an
//! IDE disk and from virtio-blk, and the guest's write to it reaches the
//! image.
//!
//! Needs `grub-mkrescue` (Debian: grub-pc-bin, grub-common, xorriso,
//! mtools), which `.ci/run` installs; without it the test fails saying
//! so rather than passing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Guest, Scratch};

/// A bootable GRUB image (an El Torito CD image that is also an MBR disk)
/// with two menu entries for the default guest, differing in one kernel
/// parameter; GRUB talks to the serial port.
fn grub_image(dir: &Path) -> PathBuf {
    grub_image_on(
        dir,
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n",
    )
}

/// [`grub_image`] with `terminal` as the GRUB commands that pick its
/// terminal (empty: the BIOS's screen and keyboard).
fn grub_image_on(dir: &Path, terminal: &str) -> PathBuf {
    let entry = |name: &str| {
        format!(
            "menuentry \"Alcazar guest ({name})\" {{\n  \
             linux /boot/vmlinuz console=ttyS0 quiet cryptomgr.notests alcazar.entry={name}\n  \
             initrd /boot/initrd.img\n}}\n"
        )
    };
    let cfg = format!(
        "{terminal}set timeout=60\n{}{}",
        entry("first"),
        entry("second")
    );
    common::grub_cd(dir, &cfg)
}

#[test]
fn seabios_boots_grub_from_a_disk_and_the_terminal_picks_the_second_entry() {
    let scratch = Scratch::new("fw-grub-disk");
    let image = grub_image(&scratch.0);
    let disk = format!("{},readonly", image.display());
    let mut g = Guest::start_screen(&[
        "run",
        "--engine",
        "emu",
        "--memory",
        "256M",
        "--firmware",
        "seabios",
        "--disk",
        &disk,
    ]);
    g.expect_line("SeaBIOS");
    g.expect_line("Alcazar guest (second)");
    g.expect_line("executed automatically");
    // Down arrow (VT100), then Enter.
    g.send(b"\x1b[B");
    std::thread::sleep(std::time::Duration::from_millis(300));
    g.send(b"\r");
    g.expect_line("ALCAZAR-READY");
    g.type_line("cat /proc/cmdline");
    let (cmdline, _) = g.expect_line("alcazar.entry=");
    assert!(cmdline.contains("alcazar.entry=second"), "{cmdline}");
    g.type_line("poweroff -f");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(0), "stderr: {stderr}");
}

#[test]
fn seabios_boots_an_iso_from_the_ide_cdrom_with_cdrom() {
    let scratch = Scratch::new("fw-grub-cd");
    let image = grub_image(&scratch.0);
    let iso = image.display().to_string();
    let mut g = Guest::start_screen(&[
        "run", "--engine", "emu", "--memory", "256M", "--cdrom", &iso,
    ]);
    g.expect_line("Booting from DVD/CD");
    g.expect_line("Alcazar guest (first)");
    g.expect_line("executed automatically");
    g.send(b"\r");
    g.expect_line("ALCAZAR-READY");
    g.type_line("cat /proc/cmdline");
    let (cmdline, _) = g.expect_line("alcazar.entry=");
    assert!(cmdline.contains("alcazar.entry=first"), "{cmdline}");
    g.type_line("poweroff -f");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(0), "stderr: {stderr}");
}

/// The same CD on the kvm engine: SeaBIOS runs from the reset vector,
/// finds the ATAPI drive and starts its El Torito image. On this
/// project's hosts (KVM's PVM backend, which emulates real-mode and
/// ring-0 code instruction by instruction) that takes about 8 s, and
/// GRUB's greeting follows a minute later; a whole Linux boot is out of
/// reach of a test there, so the test stops at the CD boot.
#[test]
fn on_kvm_seabios_boots_the_cdrom() {
    if !common::kvm_available("on_kvm_seabios_boots_the_cdrom") {
        return;
    }
    let scratch = Scratch::new("fw-grub-cd-kvm");
    let image = grub_image(&scratch.0);
    let iso = image.display().to_string();
    let mut g = Guest::start_screen(&[
        "run", "--engine", "kvm", "--memory", "256M", "--cdrom", &iso,
    ]);
    g.expect_line("SeaBIOS");
    g.expect_line("Booting from DVD/CD");
    g.kill_now();
}

/// Where the disk image's one partition starts (the usual 1 MiB: the
/// sectors before it hold the MBR and GRUB's core image).
const PARTITION_START: u64 = 1 << 20;
/// The disk image's size.
const DISK_SIZE: u64 = 64 << 20;

/// A raw disk image as an installer leaves one, built without loop
/// devices or root: an MBR (GRUB's `boot.img`) with one bootable Linux
/// partition at 1 MiB holding an ext4 file system (`mke2fs -E offset=`
/// `-d`) with the default guest's kernel and initramfs and a `grub.cfg`,
/// and GRUB's core image (`grub-mkimage`: BIOS disk, MBR partitions,
/// ext2/3/4) in the gap after the MBR, where `boot.img` loads it from by
/// default (sector 1, and its first sector reads the rest from sector 2).
/// GRUB boots its one entry at once on the serial terminal, with
/// `command` as the guest's `alcazar.exec` command.
fn mbr_ext4_disk(dir: &Path, command: &str) -> PathBuf {
    let grub = Path::new("/usr/lib/grub/i386-pc");
    assert!(
        grub.join("boot.img").is_file(),
        "GRUB's BIOS images are missing: apt-get install grub-pc-bin grub-common (.ci/run does)"
    );
    let cfg = format!(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         set timeout=0\nmenuentry \"Alcazar disk\" {{\n  \
         linux /boot/vmlinuz console=ttyS0 quiet cryptomgr.notests alcazar.exec={}\n  \
         initrd /boot/initrd.img\n}}\n",
        base64url(command)
    );
    let root = common::grub_tree(dir, &cfg);

    let core = dir.join("core.img");
    let out = Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub", "-o"])
        .arg(&core)
        .args([
            "biosdisk",
            "part_msdos",
            "ext2",
            "normal",
            "configfile",
            "linux",
            "serial",
            "terminal",
        ])
        .output()
        .expect("grub-mkimage runs");
    assert!(
        out.status.success(),
        "grub-mkimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let core = std::fs::read(&core).expect("core.img");
    assert!(
        512 + core.len() as u64 <= PARTITION_START,
        "core.img ({} bytes) does not fit before the partition",
        core.len()
    );

    // Sector 0: boot.img's code (its first 440 bytes; the disk signature
    // and the partition table follow), one partition entry, 55AA.
    let mut mbr = [0u8; 512];
    let boot = std::fs::read(grub.join("boot.img")).expect("boot.img");
    mbr[..440].copy_from_slice(&boot[..440]);
    let start = (PARTITION_START / 512) as u32;
    let sectors = ((DISK_SIZE - PARTITION_START) / 512) as u32;
    let entry = &mut mbr[446..462];
    entry[0] = 0x80; // active
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use the LBA fields
    entry[4] = 0x83; // Linux
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let image = dir.join("disk.img");
    let mut bytes = mbr.to_vec();
    bytes.extend_from_slice(&core);
    std::fs::write(&image, &bytes).expect("disk image");
    std::fs::File::options()
        .write(true)
        .open(&image)
        .and_then(|f| f.set_len(DISK_SIZE))
        .expect("disk image size");

    let out = Command::new(common::host_tool("mke2fs", "e2fsprogs"))
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg(format!("offset={PARTITION_START}"))
        .arg("-d")
        .arg(&root)
        .arg(&image)
        .arg(format!("{}k", (DISK_SIZE - PARTITION_START) / 1024))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("mke2fs runs");
    assert!(
        out.status.success(),
        "mke2fs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// `command` in base64url without padding, as `/init` reads
/// `alcazar.exec=` (RFC 4648 section 5), by the host's `base64`.
fn base64url(command: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(command.as_bytes())
        .expect("command written");
    let out = child.wait_with_output().expect("base64 output");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A file of the disk image's ext4 partition as the host reads it
/// (`debugfs` on the image at the partition's offset).
fn partition_file(image: &Path, file: &str) -> String {
    let out = Command::new(common::host_tool("debugfs", "e2fsprogs"))
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(format!("{}?offset={PARTITION_START}", image.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boots the MBR + ext4 + GRUB image given as `--disk disk_flag` (no other
/// boot flag: a disk with a boot sector means a BIOS boot); the guest
/// mounts the partition `partition`, writes a file and powers off; the
/// host reads the file back out of the image.
fn disk_boots_and_takes_a_write(name: &str, interface: &str, partition: &str) {
    let scratch = Scratch::new(name);
    let text = format!("written by the guest on {partition}");
    let command = format!(
        "mkdir -p /mnt && mount -t ext4 {partition} /mnt && echo '{text}' > /mnt/from-guest.txt \
         && umount /mnt && echo DISK-WRITE-DONE"
    );
    let image = mbr_ext4_disk(&scratch.0, &command);
    let disk = format!("{}{interface}", image.display());
    let mut g = Guest::start(&["run", "--engine", "emu", "--disk", &disk]);
    g.expect_line("SeaBIOS");
    g.expect_line("Booting from Hard Disk");
    g.expect_line("ALCAZAR-READY");
    g.expect_line("DISK-WRITE-DONE");
    let (_, _, stderr) = g.finish();
    // /init reports the command's status 0 through the debug-exit port;
    // without --exec the VMM reads it as isa-debug-exit does ((0 << 1) | 1).
    assert!(
        stderr.contains("wrote 0x0 to debug-exit"),
        "the command succeeded: {stderr}"
    );
    assert_eq!(partition_file(&image, "/from-guest.txt").trim(), text);
}

#[test]
fn a_bios_boots_an_mbr_ext4_disk_from_ide_and_the_guest_writes_to_it() {
    disk_boots_and_takes_a_write("mbr-ide", ",if=ide", "/dev/sda1");
}

#[test]
fn a_bios_boots_an_mbr_ext4_disk_from_virtio_blk_and_the_guest_writes_to_it() {
    disk_boots_and_takes_a_write("mbr-virtio", "", "/dev/vda1");
}

/// `--display text`: SeaBIOS runs the VGA BIOS, GRUB draws its menu on
/// the VGA text screen, which the VMM draws in the terminal; the
/// terminal's down arrow and Enter reach GRUB as PC keyboard scancodes
/// through the 8042, and Linux (its console on COM1, into a file) boots.
#[test]
fn the_vga_text_screen_shows_grub_in_the_terminal_and_the_keyboard_drives_it() {
    let scratch = Scratch::new("fw-grub-vga");
    let image = grub_image_on(&scratch.0, "");
    let iso = image.display().to_string();
    let com1 = scratch.0.join("com1.log");
    let serial = format!("file:{}", com1.display());
    let mut g = Guest::start_screen(&[
        "run",
        "--engine",
        "emu",
        "--memory",
        "256M",
        "--cdrom",
        &iso,
        "--display",
        "text",
        "--serial",
        &serial,
    ]);
    // The screen is drawn by differences: rebuild it as a terminal would.
    let screen = std::cell::RefCell::new(Screen::default());
    let shows = |g: &mut Guest, text: &str| {
        g.expect_line_matching(|piece| {
            let mut s = screen.borrow_mut();
            s.feed(piece);
            s.contains(text)
        });
    };
    shows(&mut g, "Alcazar guest (second)");
    // GRUB has drawn the whole menu; give it a moment to wait for keys.
    std::thread::sleep(std::time::Duration::from_millis(500));
    g.send(b"\x1b[B");
    shows(&mut g, "*Alcazar guest (second)");
    g.send(b"\r");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let text = std::fs::read_to_string(&com1).unwrap_or_default();
        if text.contains("ALCAZAR-READY") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Linux did not come up on COM1: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    g.kill_now();
}

/// A person at a terminal booting a CD gets the PC's screen without
/// asking: stdin and stdout on a terminal make `--display text` the
/// default of a BIOS boot, so GRUB's menu (on the BIOS console here, not
/// the serial port) shows in the terminal, and Ctrl-A X still quits.
#[test]
fn on_a_terminal_a_bios_boot_shows_the_vga_screen_by_default() {
    let scratch = Scratch::new("fw-grub-tty");
    let image = grub_image_on(&scratch.0, "");
    let iso = image.display().to_string();
    let mut g = Guest::start_on_terminal(&[
        "run",
        "--engine",
        "emu",
        "--cdrom",
        &iso,
        "--api-socket",
        "none",
    ]);
    let screen = std::cell::RefCell::new(Screen::default());
    g.expect_line_matching(|piece| {
        let mut s = screen.borrow_mut();
        s.feed(piece);
        s.contains("Alcazar guest (second)")
    });
    g.send(b"\x01x");
    g.expect_line("stopped by the user");
    g.kill_now();
}

/// The text of an 80x25 terminal, rebuilt from the pieces of the VMM's
/// output (split at ESC, CR and LF by `Guest::start_screen`): cursor
/// positioning (`CSI row;col H`) and clearing (`CSI 2 J`) are followed,
/// colours ignored.
struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            rows: vec![vec![' '; 80]; 25],
            row: 0,
            col: 0,
        }
    }
}

impl Screen {
    fn feed(&mut self, piece: &str) {
        let mut text = piece;
        if let Some(rest) = piece.strip_prefix('[') {
            let end = rest
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let params: Vec<usize> = rest[..end]
                .trim_start_matches('?')
                .split(';')
                .map(|p| p.parse().unwrap_or(1))
                .collect();
            match rest[end..].chars().next() {
                Some('H') => {
                    self.row = params.first().copied().unwrap_or(1).saturating_sub(1);
                    self.col = params.get(1).copied().unwrap_or(1).saturating_sub(1);
                }
                Some('J') if params.first() == Some(&2) => *self = Screen::default(),
                _ => {}
            }
            text = rest[end..].get(1..).unwrap_or("");
        }
        for c in text.chars() {
            if let Some(cell) = self
                .rows
                .get_mut(self.row)
                .and_then(|r| r.get_mut(self.col))
            {
                *cell = c;
            }
            self.col += 1;
        }
    }

    fn contains(&self, text: &str) -> bool {
        self.rows
            .iter()
            .any(|r| r.iter().collect::<String>().contains(text))
    }
}
