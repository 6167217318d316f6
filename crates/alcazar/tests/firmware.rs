//! Firmware boot end to end: SeaBIOS (Debian's `bios-256k.bin`) starts at
//! the reset vector, boots a GRUB image made by `grub-mkrescue` from the
//! default guest's kernel and initramfs (as a virtio-blk disk, and as a CD
//! in the IDE controller's ATAPI drive with `--cdrom`), GRUB shows its
//! menu in the terminal, a down-arrow and Enter typed there pick the
//! second entry, and Linux comes up with that entry's command line.
//!
//! Needs `grub-mkrescue` (Debian: grub-pc-bin, grub-common, xorriso,
//! mtools), which `.ci/run` installs; without it the test fails saying
//! so rather than passing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Guest;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("alcazar-fw-{}-{name}", std::process::id()));
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
    let status = Command::new("grub-mkrescue").arg("--version").output();
    assert!(
        status.is_ok_and(|o| o.status.success()),
        "grub-mkrescue is missing: apt-get install grub-pc-bin grub-common xorriso mtools \
         (.ci/run does)"
    );
    let (kernel, initrd) = common::default_guest_paths("cloud");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).expect("iso tree");
    std::fs::copy(kernel, root.join("boot/vmlinuz")).expect("kernel");
    std::fs::copy(initrd, root.join("boot/initrd.img")).expect("initrd");
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
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg).expect("grub.cfg");
    let image = dir.join("guest.iso");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&image)
        .arg(&root)
        .output()
        .expect("grub-mkrescue runs");
    assert!(
        out.status.success(),
        "grub-mkrescue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

#[test]
fn seabios_boots_grub_from_a_disk_and_the_terminal_picks_the_second_entry() {
    let scratch = Scratch::new("grub-disk");
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
    let scratch = Scratch::new("grub-cd");
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

/// `--display text`: SeaBIOS runs the VGA BIOS, GRUB draws its menu on
/// the VGA text screen, which the VMM draws in the terminal; the
/// terminal's down arrow and Enter reach GRUB as PC keyboard scancodes
/// through the 8042, and Linux (its console on COM1, into a file) boots.
#[test]
fn the_vga_text_screen_shows_grub_in_the_terminal_and_the_keyboard_drives_it() {
    let scratch = Scratch::new("grub-vga");
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
