//! The console stream of an upgraded API connection: guest output from
//! the [`ConsoleHub`](crate::hub::ConsoleHub) to the client, the
//! client's bytes to the console device, until either side ends.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::server::ApiVm;
use crate::hub::{ConsoleHub, HubRead};

/// Where a console client starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleFrom {
    /// Where the previous client stopped (nothing printed meanwhile is
    /// lost).
    Attach,
    /// The oldest output kept.
    Start,
    /// Only what the guest prints from now on.
    End,
}

/// Runs the stream until the client closes it or the VM ends. Input goes
/// to whichever VM `api` serves at the moment (a reboot replaces it).
pub fn stream(stream: UnixStream, api: &Arc<ApiVm>, from: ConsoleFrom) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let done = Arc::new(AtomicBool::new(false));
    let input = {
        let (api, done) = (api.clone(), done.clone());
        std::thread::Builder::new()
            .name("api-console-in".into())
            .spawn(move || forward_input(reader, &api, &done))
    };
    forward_output(&stream, api.hub(), from, &done);
    done.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    if let Ok(t) = input {
        let _ = t.join();
    }
}

fn forward_output(mut stream: &UnixStream, hub: &ConsoleHub, from: ConsoleFrom, done: &AtomicBool) {
    let mut offset = match from {
        ConsoleFrom::Attach => hub.attach_offset(),
        ConsoleFrom::Start => 0,
        ConsoleFrom::End => hub.end_offset(),
    };
    while !done.load(Ordering::SeqCst) {
        match hub.read(offset, 16 * 1024, Duration::from_millis(200)) {
            HubRead::Data {
                offset: at,
                dropped,
                data,
            } => {
                if dropped > 0 {
                    let note = format!(
                        "\r\n[alcazar: {dropped} bytes of console output were dropped]\r\n"
                    );
                    if stream.write_all(note.as_bytes()).is_err() {
                        return;
                    }
                }
                if stream.write_all(&data).is_err() {
                    return;
                }
                offset = at + data.len() as u64;
                hub.mark_delivered(offset);
            }
            HubRead::Idle => {}
            HubRead::Ended => return,
        }
    }
}

fn forward_input(mut reader: UnixStream, api: &ApiVm, done: &AtomicBool) {
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => api.get().console_write(&buf[..n]),
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
}
