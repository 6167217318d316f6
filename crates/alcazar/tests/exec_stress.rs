//! Many short `--exec` VMs at once on a machine with fewer cores than
//! VMs: every one must print its command's last line and exit with the
//! command's status.
//!
//! What this catches: a command's last line thrown away inside the guest.
//! The serial driver sends a line from its buffer interrupt by interrupt,
//! and when the command's session leader exits the kernel hangs its
//! terminal up, discarding what was not sent yet; the guest's `/init`
//! waits for the terminal to drain first (`alcazar-exit` without an
//! argument). On a loaded host the window was wide enough to lose one
//! VM's last line in about fifteen.

mod common;

use std::process::{Command, Stdio};

/// VMs per round and rounds: 2 cores, so several VMs share each.
const VMS: usize = 6;
const ROUNDS: usize = 1;

#[test]
fn parallel_exec_runs_all_print_their_last_line_and_exit() {
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let children: Vec<_> = (0..VMS)
            .map(|i| {
                let cmd = format!("echo LAST-LINE-{round}-{i}; exit {}", 3 + i);
                let child = Command::new(env!("CARGO_BIN_EXE_alcazar"))
                    .args(["run", "--engine", "emu", "--cpus", "2", "--exec", &cmd])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("alcazar runs");
                (i, child)
            })
            .collect();
        for (i, child) in children {
            let out = common::wait_with_timeout(child, common::BOOT_TIMEOUT)
                .unwrap_or_else(|report| panic!("VM {round}-{i} did not exit:\n{report}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let want = format!("LAST-LINE-{round}-{i}");
            if out.status.code() != Some(3 + i as i32) || !stdout.contains(&want) {
                failures.push(format!(
                    "VM {round}-{i}: status {:?}, last line {}\n{stdout}\n{}",
                    out.status.code(),
                    if stdout.contains(&want) {
                        "there"
                    } else {
                        "missing"
                    },
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
