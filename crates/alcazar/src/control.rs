//! The verbs that drive running VMs through their API sockets: `ls`,
//! `pause`, `resume`, `stop`, `reboot`, `console`, `telemetry`, `inspect`.
//!
//! A VM is named as `alcazar run` named it (`alcazar ls` lists them);
//! a NAME containing `/` is taken as the path of an API socket.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_control::api::client::{self, ClientError};
use alcazar_control::api::http::ClientResponse;
use alcazar_control::api::runtime;
use serde_json::{json, Value};

use crate::terminal;

/// `alcazar stop` options.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The VM.
    pub name: String,
    /// Stop at once, without asking the guest to power off.
    #[arg(long)]
    pub force: bool,
    /// Seconds the guest gets to power off after the power button before
    /// it is stopped anyway.
    #[arg(long, default_value = "20")]
    pub timeout: f64,
}

/// `alcazar console` options.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM.
    pub name: String,
    /// Where output starts: attach (where the last client stopped; output
    /// printed while detached is shown), start (all output kept) or end
    /// (only new output).
    #[arg(long, default_value = "attach", value_parser = ["attach", "start", "end"])]
    pub from: String,
}

/// `alcazar telemetry` options.
#[derive(Debug, clap::Args)]
pub struct TelemetryArgs {
    /// The VM.
    pub name: String,
    /// Print the Prometheus text format instead of the summary.
    #[arg(long, conflicts_with = "json")]
    pub prometheus: bool,
    /// Print the JSON snapshot instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `alcazar inspect` options.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The VM.
    pub name: String,
    /// A path in the tree (`cpu0/regs`, `devices/pic`); omit for all.
    pub path: Option<String>,
    /// Write VALUE (decimal or 0x-hex) to the register at PATH
    /// (`cpuN/regs/rax`..`r15`, `rip`, `rflags`) of a paused VM.
    #[arg(long, value_name = "VALUE", requires = "path")]
    pub set: Option<String>,
    /// Print the JSON tree instead of `path = value` lines.
    #[arg(long)]
    pub json: bool,
}

/// The socket of VM `name`.
fn socket_of(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        runtime::socket_path(&runtime::socket_dir(), name)
    }
}

/// One request to VM `name`; a failure is printed as one line naming the
/// VM, and becomes `Err(exit status)`.
fn call(
    name: &str,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> Result<ClientResponse, u8> {
    let socket = socket_of(name);
    if !name.contains('/') && !runtime::is_live(&socket) {
        eprintln!("alcazar: no VM named \"{name}\" is running (`alcazar ls` lists them)");
        return Err(1);
    }
    match client::request(&socket, method, target, body) {
        Ok(r) if r.status < 300 => Ok(r),
        Ok(r) => {
            eprintln!("alcazar: {name}: {}", client::error_message(&r));
            Err(1)
        }
        Err(ClientError::Connect { .. }) => {
            eprintln!("alcazar: no VM named \"{name}\" is running (`alcazar ls` lists them)");
            Err(1)
        }
        Err(e) => {
            eprintln!("alcazar: {name}: {e}");
            Err(1)
        }
    }
}

fn status(result: Result<(), u8>) -> u8 {
    result.err().unwrap_or(0)
}

fn json_of(r: &ClientResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// `alcazar ls`: the running VMs.
pub fn ls() -> u8 {
    let dir = runtime::socket_dir();
    let names = runtime::running(&dir);
    println!(
        "{:<20} {:<8} {:<6} {:>4} {:>9} {:>10} {:>8}",
        "NAME", "STATE", "ENGINE", "CPUS", "MEMORY", "UPTIME", "PID"
    );
    let mut busy = Vec::new();
    for name in names {
        let answer = client::request(&runtime::socket_path(&dir, &name), "GET", "/v1/vm", None);
        let v = match answer {
            Ok(r) if r.status == 200 => json_of(&r),
            // Gone between the listing and the request.
            Err(ClientError::Connect { .. }) => continue,
            _ => {
                busy.push(name.clone());
                json!({ "state": "busy" })
            }
        };
        let mib = v["memory_bytes"].as_u64().unwrap_or(0) >> 20;
        println!(
            "{:<20} {:<8} {:<6} {:>4} {:>8}M {:>9.0}s {:>8}",
            name,
            v["state"].as_str().unwrap_or("?"),
            v["engine"].as_str().unwrap_or("?"),
            v["cpus"].as_u64().unwrap_or(0),
            mib,
            v["uptime_seconds"].as_f64().unwrap_or(0.0),
            v["pid"].as_u64().unwrap_or(0),
        );
    }
    if !busy.is_empty() {
        eprintln!(
            "alcazar: {} did not answer in time (its API is busy: too many connections, or a long request); run `alcazar ls` again",
            busy.join(", ")
        );
    }
    0
}

/// `alcazar pause NAME` / `alcazar resume NAME`.
pub fn pause_resume(name: &str, pause: bool) -> u8 {
    let (target, done) = if pause {
        ("/v1/vm/pause", "paused")
    } else {
        ("/v1/vm/resume", "resumed")
    };
    status(call(name, "POST", target, None).map(|_| println!("{name}: {done}")))
}

/// `alcazar stop NAME`: the power button, then a forced stop after the
/// timeout; returns once the VM's socket is gone.
pub fn stop(args: &StopArgs) -> u8 {
    let body = json!({ "force": args.force, "timeout_seconds": args.timeout });
    let r = match call(&args.name, "POST", "/v1/vm/stop", Some(&body)) {
        Ok(r) => r,
        Err(s) => return s,
    };
    let v = json_of(&r);
    let how = match v["shutdown"].as_str() {
        Some("clean") => "powered off cleanly".to_string(),
        _ if args.force => "stopped (forced)".to_string(),
        _ => format!(
            "did not power off within {} s of the power button: stopped (forced)",
            args.timeout
        ),
    };
    println!("{}: {how}", args.name);
    // The VMM removes its socket as it exits.
    let socket = socket_of(&args.name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    0
}

/// `alcazar reboot NAME`.
pub fn reboot(name: &str) -> u8 {
    status(call(name, "POST", "/v1/vm/reboot", None).map(|_| println!("{name}: rebooting")))
}

/// `alcazar telemetry NAME`.
pub fn telemetry(args: &TelemetryArgs) -> u8 {
    let format = if args.prometheus {
        "prometheus"
    } else if args.json {
        "json"
    } else {
        "text"
    };
    let target = format!("/v1/vm/telemetry?format={format}");
    status(call(&args.name, "GET", &target, None).map(|r| {
        let _ = std::io::stdout().write_all(&r.body);
    }))
}

/// `alcazar inspect NAME [PATH] [--set VALUE]`.
pub fn inspect(args: &InspectArgs) -> u8 {
    let path = args.path.as_deref().unwrap_or("").trim_matches('/');
    let target = if path.is_empty() {
        "/v1/vm/inspect".to_string()
    } else {
        format!("/v1/vm/inspect/{path}")
    };
    if let Some(value) = &args.set {
        let number = match value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).is_ok(),
            None => value.parse::<u64>().is_ok(),
        };
        if !number {
            eprintln!(
                "alcazar: inspect --set \"{value}\": not a number; give a register value in decimal or 0x hex, e.g. --set 0x2a"
            );
            return 2;
        }
        let body = json!({ "value": value });
        return status(
            call(&args.name, "PUT", &target, Some(&body)).map(|_| println!("{path} = {value}")),
        );
    }
    status(call(&args.name, "GET", &target, None).map(|r| {
        let v = json_of(&r);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&v["value"]).unwrap_or_default()
            );
        } else {
            let mut lines = Vec::new();
            flatten(path, &v["value"], &mut lines);
            for (p, value) in lines {
                println!("{p} = {value}");
            }
        }
    }))
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                flatten(&p, child, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// `alcazar console NAME`: shows the guest console and types into it
/// until Ctrl-A D (or the end of stdin, or of the VM).
pub fn console(args: &ConsoleArgs) -> u8 {
    let socket = socket_of(&args.name);
    let conn = match client::console(&socket, &args.from) {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            eprintln!("alcazar: {}: {why}", args.name);
            return 1;
        }
        Err(_) => {
            eprintln!(
                "alcazar: no VM named \"{}\" is running (`alcazar ls` lists them)",
                args.name
            );
            return 1;
        }
    };
    let term = terminal::RawMode::enter();
    eprint!(
        "alcazar: attached to \"{}\"; Ctrl-A D detaches{}",
        args.name,
        if term.is_some() { "\r\n" } else { "\n" }
    );
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&conn.early);
    let _ = stdout.flush();
    let Ok(mut output) = conn.stream.try_clone() else {
        return 1;
    };
    let input = conn.stream;
    let detached = Arc::new(AtomicBool::new(false));
    let flag = detached.clone();
    std::thread::spawn(move || terminal::forward_keys(input, flag));
    let mut buf = [0u8; 4096];
    let ended = loop {
        match output.read(&mut buf) {
            Ok(0) | Err(_) => break !detached.load(Ordering::SeqCst),
            Ok(n) => {
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
        }
    };
    drop(term);
    if ended {
        eprintln!("\nalcazar: the VM \"{}\" has stopped", args.name);
    } else {
        eprintln!("\nalcazar: detached from \"{}\"", args.name);
    }
    0
}
