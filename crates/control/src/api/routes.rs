//! The API's endpoints: what each request does to the VM and what it
//! answers. `docs/api/openapi.json` describes the same set; a test checks
//! that the two agree.
//!
//! | method and path                  | does                                   |
//! |----------------------------------|----------------------------------------|
//! | `GET /v1/vm`                     | name, state, engine, cpus, memory, ... |
//! | `POST /v1/vm/pause`              | pause (409 unless running)             |
//! | `POST /v1/vm/resume`             | resume (409 unless paused)             |
//! | `POST /v1/vm/stop`               | power button, forced after a timeout   |
//! | `POST /v1/vm/reboot`             | hard reset: the VM is built again      |
//! | `GET /v1/vm/telemetry`           | counters as JSON                       |
//! | `GET /v1/vm/metrics`             | counters in the Prometheus format      |
//! | `GET /v1/vm/inspect[/PATH]`      | the inspector tree or one value        |
//! | `PUT /v1/vm/inspect/cpuN/regs/R` | write a register of a paused vCPU      |
//! | `GET /v1/vm/console`             | upgrade to the console byte stream     |
//! | `GET /v1/openapi.json`           | this API's OpenAPI document            |

use std::time::Duration;

use alcazar_core::{Node, StopReason, Tree};
use serde_json::{json, Map, Value};

use super::attach::ConsoleFrom;
use super::http::{Request, Response};
use super::server::ApiVm;
use alcazar_vmm::lifecycle::{LifecycleError, VmState};
use alcazar_vmm::machine_tree;
use alcazar_vmm::telemetry::Telemetry;
use alcazar_vmm::vm::{Shutdown, VmHandle};

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../../docs/api/openapi.json");

/// Every method and path template the server answers (the OpenAPI test
/// compares this list with the document's).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/v1/vm"),
    ("POST", "/v1/vm/pause"),
    ("POST", "/v1/vm/resume"),
    ("POST", "/v1/vm/stop"),
    ("POST", "/v1/vm/reboot"),
    ("GET", "/v1/vm/telemetry"),
    ("GET", "/v1/vm/metrics"),
    ("GET", "/v1/vm/inspect"),
    ("GET", "/v1/vm/inspect/{path}"),
    ("PUT", "/v1/vm/inspect/{path}"),
    ("GET", "/v1/vm/console"),
    ("GET", "/v1/openapi.json"),
];

/// How long `stop` waits for the guest to power off by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What to do with a request.
#[derive(Debug)]
pub enum Routed {
    /// Answer and close.
    Reply(Response),
    /// Upgrade to the console stream.
    Console {
        /// Where the client starts reading.
        from: ConsoleFrom,
    },
}

/// Handles `req` against the VM `api` serves.
pub fn route(api: &ApiVm, req: &Request) -> Routed {
    let vm = api.get();
    let path = req.path.trim_end_matches('/');
    let reply = match (req.method.as_str(), path) {
        ("GET", "/v1/vm") => Response::json(200, &info(&vm, api.pid())),
        ("POST", "/v1/vm/pause") => lifecycle(vm.pause()),
        ("POST", "/v1/vm/resume") => lifecycle(vm.resume()),
        ("POST", "/v1/vm/stop") => stop(&vm, req),
        ("POST", "/v1/vm/reboot") => reboot(&vm),
        ("GET", "/v1/vm/telemetry") => telemetry(&vm, req.query("format")),
        ("GET", "/v1/vm/metrics") => Response::text(
            200,
            crate::prometheus::CONTENT_TYPE,
            crate::prometheus::render(&Telemetry::collect(vm.machine()), vm.name()),
        ),
        ("GET", "/v1/vm/console") => return console(req),
        ("GET", "/v1/openapi.json") => Response::text(200, "application/json", OPENAPI.into()),
        ("GET", p) if p == "/v1/vm/inspect" || p.starts_with("/v1/vm/inspect/") => inspect(
            &vm,
            p.trim_start_matches("/v1/vm/inspect")
                .trim_start_matches('/'),
        ),
        ("PUT", p) if p.starts_with("/v1/vm/inspect/") => {
            write_register(&vm, p.trim_start_matches("/v1/vm/inspect/"), &req.body)
        }
        (method, p)
            if ENDPOINTS.iter().any(|(_, e)| *e == p) || p.starts_with("/v1/vm/inspect/") =>
        {
            Response::method_not_allowed(
                allowed_methods(p),
                format!("{method} is not allowed on {p}"),
            )
        }
        (_, p) => Response::error(
            404,
            format!("no endpoint {p}; GET /v1/openapi.json lists them"),
        ),
    };
    Routed::Reply(reply)
}

/// The methods `path` has, for the `Allow` header of a 405.
fn allowed_methods(path: &str) -> String {
    let template = if path.starts_with("/v1/vm/inspect/") {
        "/v1/vm/inspect/{path}"
    } else {
        path
    };
    let methods: Vec<&str> = ENDPOINTS
        .iter()
        .filter(|(_, p)| *p == template)
        .map(|(m, _)| *m)
        .collect();
    methods.join(", ")
}

fn telemetry(vm: &VmHandle, format: Option<&str>) -> Response {
    let t = Telemetry::collect(vm.machine());
    match format {
        None | Some("json") => {
            Response::json(200, &serde_json::to_value(&t).unwrap_or(Value::Null))
        }
        Some("text") => Response::text(200, "text/plain; charset=utf-8", t.summary()),
        Some("prometheus") => Response::text(
            200,
            crate::prometheus::CONTENT_TYPE,
            crate::prometheus::render(&t, vm.name()),
        ),
        Some(other) => {
            Response::error(400, format!("format={other}: use json, text or prometheus"))
        }
    }
}

fn info(vm: &VmHandle, pid: u32) -> Value {
    json!({
        "name": vm.name(),
        "state": vm.state().name(),
        "engine": vm.engine().to_string(),
        "cpus": vm.cpus(),
        "memory_bytes": vm.memory(),
        "uptime_seconds": vm.uptime().as_secs_f64(),
        "pid": pid,
        "stop_reason": vm.stop_reason().map(|r| r.to_string()),
    })
}

fn lifecycle(result: Result<(), LifecycleError>) -> Response {
    match result {
        Ok(()) => Response::no_content(),
        Err(e @ LifecycleError::WrongState { .. }) => Response::error(409, e.to_string()),
        Err(e @ LifecycleError::PauseTimedOut(_)) => Response::error(500, e.to_string()),
        Err(e @ LifecycleError::BadRegister(_)) => Response::error(400, e.to_string()),
    }
}

/// The body of `POST /v1/vm/stop` (all optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    /// Skip the power button.
    #[serde(default)]
    force: bool,
    /// How long the guest gets to power off.
    timeout_seconds: Option<f64>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Response::error(400, format!("bad JSON body: {e}")))
}

fn stop(vm: &VmHandle, req: &Request) -> Response {
    let body: StopRequest = match parse_body(&req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if vm.state() == VmState::Stopped {
        return Response::error(409, "the VM is stopped");
    }
    let timeout = match body.timeout_seconds {
        None => DEFAULT_STOP_TIMEOUT,
        Some(t) if t.is_finite() && (0.0..=3600.0).contains(&t) => Duration::from_secs_f64(t),
        Some(t) => {
            return Response::error(
                400,
                format!("timeout_seconds {t} is not between 0 and 3600"),
            )
        }
    };
    let how = if body.force {
        vm.stop(StopReason::UserQuit);
        Shutdown::Forced
    } else {
        vm.shutdown(timeout)
    };
    Response::json(
        200,
        &json!({
            "shutdown": match how { Shutdown::Clean => "clean", Shutdown::Forced => "forced" },
            "stop_reason": vm.stop_reason().map(|r| r.to_string()),
        }),
    )
}

fn reboot(vm: &VmHandle) -> Response {
    if vm.state() == VmState::Stopped {
        return Response::error(409, "the VM is stopped");
    }
    vm.reboot();
    Response::json(202, &json!({ "rebooting": true }))
}

fn console(req: &Request) -> Routed {
    let upgrade = req
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("alcazar-console"));
    if !upgrade {
        return Routed::Reply(Response::error(
            400,
            "the console is a byte stream: send Connection: Upgrade and Upgrade: alcazar-console",
        ));
    }
    let from = match req.query("from") {
        None | Some("attach") => ConsoleFrom::Attach,
        Some("start") => ConsoleFrom::Start,
        Some("end") => ConsoleFrom::End,
        Some(other) => {
            return Routed::Reply(Response::error(
                400,
                format!("from={other}: use attach, start or end"),
            ))
        }
    };
    Routed::Console { from }
}

/// A tree as a JSON object (values are strings, order kept).
pub fn tree_json(tree: &Tree) -> Value {
    let mut map = Map::new();
    for (name, node) in tree.entries() {
        map.insert(name.clone(), node_json(node));
    }
    Value::Object(map)
}

fn node_json(node: &Node) -> Value {
    match node {
        Node::Value(v) => Value::String(v.clone()),
        Node::Tree(t) => tree_json(t),
    }
}

fn inspect(vm: &VmHandle, path: &str) -> Response {
    let tree = match machine_tree::vm_tree(vm) {
        Ok(t) => t,
        Err(e) => return lifecycle(Err(e)),
    };
    match tree.get(path) {
        Some(node) => Response::json(200, &json!({ "path": path, "value": node_json(&node) })),
        None => Response::error(404, format!("no inspector path {path:?}")),
    }
}

/// The body of `PUT /v1/vm/inspect/...`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    /// The new value: a number, or a string in decimal or 0x-hex.
    value: Option<Value>,
}

fn write_register(vm: &VmHandle, path: &str, body: &[u8]) -> Response {
    let body: WriteRequest = match parse_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(value) = body.value.as_ref().and_then(parse_u64) else {
        return Response::error(
            400,
            "the body must be {\"value\": N} with N a number or a \"0x..\" string",
        );
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let target = match parts.as_slice() {
        [cpu, "regs", reg] => cpu
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| (n, *reg)),
        _ => None,
    };
    let Some((cpu, reg)) = target else {
        return Response::method_not_allowed(
            "GET".into(),
            format!(
                "{path} is read-only; writable: cpuN/regs/{{rax..r15,rip,rflags}} while paused"
            ),
        );
    };
    match vm.lifecycle().set_register(cpu, reg, value) {
        Ok(()) => Response::no_content(),
        Err(e) => lifecycle(Err(e)),
    }
}

fn parse_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}
