//! The control API against its description, `docs/api/openapi.json`.
//!
//! The document is checked for itself (it parses, it is OpenAPI 3.1,
//! every `$ref` resolves, every operation has a unique operationId and
//! responses) and against the server's route table (the same set of
//! methods and paths as [`ENDPOINTS`]). Then a real VM — the kit's
//! `spinner` on the emu engine, which prints a line and loops until
//! stopped — is served on a socket in a private temporary directory, and
//! every endpoint and method is exercised through the client the CLI
//! uses. Every answer must carry a status the document declares for that
//! operation, a `Content-Type` it declares for that status, and a body
//! that validates against the declared schema (a small JSON Schema
//! validator below, which knows the keywords the document uses and
//! refuses any other).

use std::collections::BTreeSet;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_control::api::client::{self, ConsoleConnection};
use alcazar_control::api::http::{read_response, ClientResponse, MAX_BODY, MAX_HEAD};
use alcazar_control::api::routes::ENDPOINTS;
use alcazar_control::api::server::MAX_CONNECTIONS;
use alcazar_control::api::{ApiServer, ApiVm};
use alcazar_control::hub::{ConsoleHub, HubTerminal};
use alcazar_core::StopReason;
use alcazar_kit::TICKER_COUNTER_ADDRESS;
use alcazar_vmm::config::{BootSource, ConsoleTarget, EngineChoice, FlatImage, VmConfig};
use alcazar_vmm::vm::{RunningVm, Vm, VmHandle};
use serde_json::{json, Value};

mod openapi;
use openapi::{keywords_known, refs, Doc};

const SPINNER_LINE: &str = "kit: spinning until stopped\n";

// ---------------------------------------------------------------------
// The document on its own.
// ---------------------------------------------------------------------

#[test]
fn the_document_is_openapi_3_1_with_resolving_refs_and_unique_operation_ids() {
    let doc = Doc::load();
    let version = doc.root["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1"), "openapi is {version}");
    assert!(doc.root["info"]["title"].is_string());
    assert!(doc.root["info"]["version"].is_string());
    let server = &doc.root["servers"][0];
    assert!(server["url"].is_string() && server["x-unix-socket"].is_object());

    let mut all = Vec::new();
    refs(&doc.root, String::new(), &mut all);
    assert!(!all.is_empty());
    for (at, r) in &all {
        assert!(doc.pointer(r).is_some(), "{at}: $ref {r} does not resolve");
    }

    let mut ids = BTreeSet::new();
    for (method, path, op) in doc.operations() {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        for key in ["summary", "description"] {
            assert!(op[key].is_string(), "{method} {path} has no {key}");
        }
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, response) in responses {
            assert!(
                status.len() == 3 && status.parse::<u16>().is_ok(),
                "{method} {path}: status {status}"
            );
            let response = doc.deref(response);
            assert!(
                response["description"].is_string(),
                "{method} {path} {status} has no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status} is not an Error"
                );
            }
        }
        // Every `{name}` in the path is a declared path parameter.
        let item = &doc.root["paths"][&path];
        let params: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .chain(op["parameters"].as_array())
            .flatten()
            .map(|p| doc.deref(p))
            .collect();
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
            let name = name.trim_end_matches('}');
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                "{method} {path}: {{{name}}} is not a required path parameter"
            );
        }
    }
    // Every schema uses only keywords the validator knows, so no part of
    // a body goes unchecked.
    for (name, schema) in doc.root["components"]["schemas"].as_object().unwrap() {
        let mut errors = Vec::new();
        keywords_known(schema, name, &mut errors);
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}

#[test]
fn the_document_describes_exactly_the_servers_endpoints() {
    let doc = Doc::load();
    let documented: BTreeSet<(String, String)> = doc
        .operations()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn the_validator_rejects_what_the_schemas_forbid() {
    let doc = Doc::load();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let bad = |name: &str, v: Value| {
        let mut errors = Vec::new();
        doc.validate(&schema(name), &v, "", &mut errors);
        assert!(!errors.is_empty(), "{name} accepted {v}");
    };
    let good = |name: &str, v: Value| doc.assert_valid(&schema(name), &v, name);
    good("Error", json!({"error": "x"}));
    bad("Error", json!({}));
    bad("Error", json!({"error": 1}));
    bad("Error", json!({"error": "x", "more": 1}));
    bad("Error", json!("x"));
    let info = json!({"name": "a", "state": "running", "engine": "emu", "cpus": 1,
        "memory_bytes": 1024, "uptime_seconds": 0.5, "pid": 7, "stop_reason": null});
    good("VmInfo", info.clone());
    let mut wrong = info.clone();
    wrong["state"] = json!("asleep");
    bad("VmInfo", wrong);
    let mut wrong = info.clone();
    wrong["cpus"] = json!(1.5);
    bad("VmInfo", wrong);
    let mut wrong = info;
    wrong["cpus"] = json!(0);
    bad("VmInfo", wrong);
    good("StopRequest", json!({"timeout_seconds": 3600}));
    bad("StopRequest", json!({"timeout_seconds": 3601}));
    good(
        "InspectResult",
        json!({"path": "", "value": {"a": {"b": "0x1"}}}),
    );
    bad(
        "InspectResult",
        json!({"path": "", "value": {"a": {"b": 1}}}),
    );
    bad("InspectResult", json!({"path": "", "value": ["x"]}));
    good("RegisterWrite", json!({"value": "0x10"}));
    good("RegisterWrite", json!({"value": 16}));
    bad("RegisterWrite", json!({"value": -1}));
    bad("RegisterWrite", json!({"value": true}));
    bad("RebootAccepted", json!({"rebooting": false}));
    // A keyword the validator does not check is an error, not a pass.
    let mut errors = Vec::new();
    doc.validate(&json!({"pattern": "^a$"}), &json!("b"), "", &mut errors);
    assert!(!errors.is_empty());
    // Path templates.
    assert_eq!(doc.template_for("/v1/vm").as_deref(), Some("/v1/vm"));
    assert_eq!(
        doc.template_for("/v1/vm/inspect").as_deref(),
        Some("/v1/vm/inspect")
    );
    assert_eq!(
        doc.template_for("/v1/vm/inspect/cpu0/regs/rip").as_deref(),
        Some("/v1/vm/inspect/{path}")
    );
    assert_eq!(doc.template_for("/v1/vm/nothing"), None);
    assert_eq!(doc.template_for("/v1/vm/pause/more"), None);
}

// ---------------------------------------------------------------------
// A served VM.
// ---------------------------------------------------------------------

/// A private directory for the socket, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("alcazar-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spinner_config() -> VmConfig {
    VmConfig {
        name: "spinner".into(),
        engine: EngineChoice::Emu,
        memory: 16 << 20,
        // The console hub (what console clients read) is fed by the
        // terminal-bound output.
        serial: ConsoleTarget::Stdio,
        ..VmConfig::new(spinner_boot())
    }
}

/// The test's side of every exchange: sends, checks against the
/// document, and records which operations were exercised.
struct Api {
    doc: Doc,
    socket: PathBuf,
    seen: BTreeSet<(String, String)>,
}

impl Api {
    /// Sends a request with the CLI's client and checks the answer
    /// against the document; returns the status and the JSON body.
    fn call(&mut self, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
        let response = client::request(&self.socket, method, target, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        let status = response.status;
        if let Some(body) = &body {
            self.check_request_body(method, target, body, status);
        }
        (status, self.checked(method, target, &response))
    }

    /// The document's request schema and the server agree: a body the
    /// schema refuses is refused (400, or 413 when too large), and a body
    /// the server takes (2xx) is one the schema allows.
    fn check_request_body(&self, method: &str, target: &str, body: &Value, status: u16) {
        let path = target.split('?').next().unwrap_or_default();
        let Some(template) = self.doc.template_for(path) else {
            return;
        };
        let op = &self.doc.root["paths"][&template][method.to_ascii_lowercase()];
        let Some(request) = op.get("requestBody") else {
            return;
        };
        let schema = &self.doc.deref(request)["content"]["application/json"]["schema"];
        let mut errors = Vec::new();
        self.doc.validate(schema, body, "", &mut errors);
        if !errors.is_empty() {
            assert!(
                status == 400 || status == 413,
                "{method} {target}: the server took {body} ({status}), which the document refuses: {errors:?}"
            );
        }
        if (200..300).contains(&status) {
            assert!(errors.is_empty(), "{method} {target}: {errors:?}");
        }
    }

    /// Sends raw bytes and checks the answer like [`Api::call`].
    fn raw(&mut self, method: &str, target: &str, bytes: &[u8]) -> (u16, Value) {
        let response = raw(&self.socket, bytes);
        let status = response.status;
        (status, self.checked(method, target, &response))
    }

    fn checked(&mut self, method: &str, target: &str, response: &ClientResponse) -> Value {
        let path = target.split('?').next().unwrap_or_default();
        let operation = self.doc.template_for(path).filter(|t| {
            self.doc.root["paths"][t]
                .get(method.to_ascii_lowercase())
                .is_some()
        });
        match operation {
            Some(template) => {
                self.seen.insert((method.to_string(), template.clone()));
                self.doc.check(method, &template, response)
            }
            None => {
                // Not an operation: the document's general answers.
                let general = match response.status {
                    400 => "BadRequest",
                    404 => "NotFound",
                    405 => "MethodNotAllowed",
                    413 => "TooLarge",
                    503 => "Busy",
                    s => panic!("{method} {target} is no operation, yet it answered {s}"),
                };
                let declared = json!({ "$ref": format!("#/components/responses/{general}") });
                self.doc
                    .check_response(&format!("{method} {target}"), &declared, response)
            }
        }
    }

    fn expect(&mut self, method: &str, target: &str, body: Option<Value>, status: u16) -> Value {
        let (got, value) = self.call(method, target, body);
        assert_eq!(got, status, "{method} {target}: {value}");
        value
    }

    fn state(&mut self) -> String {
        let info = self.expect("GET", "/v1/vm", None, 200);
        info["state"].as_str().unwrap_or_default().to_string()
    }

    fn wait_for_state(&mut self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state() != state {
            assert!(Instant::now() < deadline, "the VM never became {state}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One request as bytes; the response as the server sent it.
fn raw(socket: &Path, bytes: &[u8]) -> ClientResponse {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(bytes);
    read_response(&mut BufReader::new(stream)).expect("a response")
}

fn counter(vm: &VmHandle) -> u32 {
    let mut b = [0u8; 4];
    vm.machine()
        .memory
        .read(TICKER_COUNTER_ADDRESS, &mut b)
        .expect("the counter is in RAM");
    u32::from_le_bytes(b)
}

fn wait_for_count(vm: &VmHandle, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(vm) < n {
        assert!(Instant::now() < deadline, "the spinner does not count");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the console until `want` bytes arrived or `within` passed.
fn read_console(conn: &mut ConsoleConnection, want: usize, within: Duration) -> Vec<u8> {
    let mut got = std::mem::take(&mut conn.early);
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while got.len() < want && Instant::now() < deadline {
        match conn.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the console: {e}"),
        }
    }
    got
}

fn attach(socket: &Path, from: &str) -> ConsoleConnection {
    client::console(socket, from)
        .expect("console request")
        .expect("console upgrade")
}

/// The kit's spinner as a flat image (the kit is a dev-dependency; the
/// library boots bytes).
fn spinner_boot() -> BootSource {
    let kit = alcazar_kit::build("spinner")
        .expect("the kit has a spinner")
        .expect("it assembles");
    BootSource::Flat {
        image: FlatImage::Bytes(kit.code),
        mode: kit.mode,
        load_address: kit.load_address,
        aps_wait_for_sipi: kit.aps_wait_for_sipi,
    }
}

/// Creates the spinner, its terminal output teed into `hub` as the
/// `alcazar` command does.
fn create_spinner(hub: &Arc<ConsoleHub>) -> Vm {
    Vm::create_with_terminal(&spinner_config(), Arc::new(HubTerminal::new(hub.clone())))
        .expect("VM created")
}

/// Starts the spinner with a hub the test keeps (a reboot reuses it).
fn start_spinner(hub: &Arc<ConsoleHub>) -> RunningVm {
    create_spinner(hub).start().expect("VM started")
}

#[test]
fn every_endpoint_answers_as_documented() {
    let dir = TempDir::new("all");
    let socket = dir.0.join("spinner.sock");
    let hub = Arc::new(ConsoleHub::new());
    let vm = create_spinner(&hub);
    let current = ApiVm::new(vm.handle(), hub.clone());
    let server = ApiServer::start(&socket, current.clone()).expect("server");
    let running = vm.start().expect("VM started");
    let handle = running.handle();

    let meta = std::fs::metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");

    let mut api = Api {
        doc: Doc::load(),
        socket: socket.clone(),
        seen: BTreeSet::new(),
    };

    // The served document is the file in the repository.
    let served = client::request(&socket, "GET", "/v1/openapi.json", None).expect("document");
    api.checked("GET", "/v1/openapi.json", &served);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
    assert_eq!(
        served.body,
        std::fs::read(file).expect("the document file"),
        "GET /v1/openapi.json is not docs/api/openapi.json"
    );

    let info = api.expect("GET", "/v1/vm", None, 200);
    assert_eq!(info["name"], "spinner");
    assert_eq!(info["state"], "running");
    assert_eq!(info["engine"], "emu");
    assert_eq!(info["cpus"], 1);
    assert_eq!(info["memory_bytes"], 16 << 20);
    assert_eq!(info["pid"], std::process::id());
    assert_eq!(info["stop_reason"], Value::Null);

    // The console: the first client gets the spinner's line.
    let mut first = attach(&socket, "attach");
    let out = read_console(&mut first, SPINNER_LINE.len(), Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out), SPINNER_LINE);
    drop(first);
    wait_for_count(&handle, 100);

    // The upgrade itself, byte by byte: 101 and its headers. `end` does
    // not move where the next attach starts.
    let upgraded = raw(
        &socket,
        b"GET /v1/vm/console?from=end HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: alcazar-console\r\n\r\n",
    );
    assert_eq!(upgraded.status, 101);
    api.checked("GET", "/v1/vm/console", &upgraded);
    // Without the upgrade, or from nowhere: 400.
    api.expect("GET", "/v1/vm/console", None, 400);
    let (status, _) = api.raw(
        "GET",
        "/v1/vm/console?from=middle",
        b"GET /v1/vm/console?from=middle HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: alcazar-console\r\n\r\n",
    );
    assert_eq!(status, 400);
    let refused = client::console(&socket, "middle").expect("console request");
    assert!(refused.is_err_and(|m| m.contains("from=middle")));

    // Telemetry in its three formats, and the metrics.
    for target in ["/v1/vm/telemetry", "/v1/vm/telemetry?format=json"] {
        let t = api.expect("GET", target, None, 200);
        assert!(t.is_object());
    }
    let text = api.expect("GET", "/v1/vm/telemetry?format=text", None, 200);
    assert!(!text.as_str().unwrap_or_default().is_empty());
    let prom = api.expect("GET", "/v1/vm/telemetry?format=prometheus", None, 200);
    assert!(prom.as_str().unwrap_or_default().contains("vm=\"spinner\""));
    api.expect("GET", "/v1/vm/telemetry?format=xml", None, 400);
    let metrics = api.expect("GET", "/v1/vm/metrics", None, 200);
    assert!(metrics.as_str().unwrap_or_default().contains("# TYPE "));

    // The inspector, read while running (paused for the moment).
    let tree = api.expect("GET", "/v1/vm/inspect", None, 200);
    assert_eq!(tree["path"], "");
    for top in ["vm", "cpu0", "devices"] {
        assert!(tree["value"][top].is_object(), "no {top} in the tree");
    }
    assert_eq!(
        api.state(),
        "running",
        "reading the tree left the VM paused"
    );
    let rip = api.expect("GET", "/v1/vm/inspect/cpu0/regs/rip", None, 200);
    assert_eq!(rip["path"], "cpu0/regs/rip");
    assert!(rip["value"].as_str().is_some_and(|v| v.starts_with("0x")));
    let escaped = api.expect("GET", "/v1/vm/inspect/cpu0%2Fregs%2Frip", None, 200);
    assert_eq!(escaped["path"], "cpu0/regs/rip");
    let name = api.expect("GET", "/v1/vm/inspect/vm/name", None, 200);
    assert_eq!(name["value"], "spinner");
    let regs = api.expect("GET", "/v1/vm/inspect/cpu0/regs/", None, 200);
    assert!(regs["value"]["rbx"].is_string());
    api.expect("GET", "/v1/vm/inspect/cpu0/regs/nothing", None, 404);
    api.expect("GET", "/v1/vm/inspect/cpu9", None, 404);

    // Registers are written only while paused.
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu0/regs/rbx",
        Some(json!({"value": 1})),
        409,
    );

    // Pause, and the transitions it refuses.
    api.expect("POST", "/v1/vm/resume", None, 409);
    api.expect("POST", "/v1/vm/pause", None, 204);
    assert_eq!(api.state(), "paused");
    api.expect("POST", "/v1/vm/pause", None, 409);
    let count = counter(&handle);
    let rip1 = api.expect("GET", "/v1/vm/inspect/cpu0/regs/rip", None, 200);
    std::thread::sleep(Duration::from_millis(200));
    let rip2 = api.expect("GET", "/v1/vm/inspect/cpu0/regs/rip", None, 200);
    assert_eq!(rip1, rip2, "RIP moved while paused");
    assert_eq!(counter(&handle), count, "the guest ran while paused");

    // Register writes, as a hex string and as a number.
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu0/regs/rbx",
        Some(json!({"value": "0x1234_5678"})),
        204,
    );
    let rbx = api.expect("GET", "/v1/vm/inspect/cpu0/regs/rbx", None, 200);
    assert_eq!(rbx["value"], "0x0000000012345678");
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu0%2Fregs%2Frbx",
        Some(json!({"value": 4660})),
        204,
    );
    let rbx = api.expect("GET", "/v1/vm/inspect/cpu0/regs/rbx", None, 200);
    assert_eq!(rbx["value"], "0x0000000000001234");
    // Read-only paths, unknown registers and vCPUs, bad bodies.
    api.expect(
        "PUT",
        "/v1/vm/inspect/vm/name",
        Some(json!({"value": 1})),
        405,
    );
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu0/regs",
        Some(json!({"value": 1})),
        405,
    );
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu0/regs/cr3",
        Some(json!({"value": 1})),
        400,
    );
    api.expect(
        "PUT",
        "/v1/vm/inspect/cpu9/regs/rax",
        Some(json!({"value": 1})),
        400,
    );
    for body in [
        json!({"value": true}),
        json!({"value": -1}),
        json!({"value": "0xzz"}),
        json!({"value": 1, "extra": 2}),
        json!({}),
    ] {
        api.expect("PUT", "/v1/vm/inspect/cpu0/regs/rbx", Some(body), 400);
    }
    let (status, error) = api.raw(
        "PUT",
        "/v1/vm/inspect/cpu0/regs/rbx",
        b"PUT /v1/vm/inspect/cpu0/regs/rbx HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"value\":",
    );
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("JSON")));

    api.expect("POST", "/v1/vm/resume", None, 204);
    assert_eq!(api.state(), "running");
    api.expect("POST", "/v1/vm/resume", None, 409);
    wait_for_count(&handle, count + 100);

    // Paths and methods that do not exist.
    for target in ["/v1/nothing", "/", "/v1/vm/inspectfoo", "/v1/vm/pause/now"] {
        api.expect("GET", target, None, 404);
    }
    for (method, target) in [
        ("GET", "/v1/vm/pause"),
        ("DELETE", "/v1/vm"),
        ("POST", "/v1/openapi.json"),
        ("PUT", "/v1/vm/inspect"),
        ("POST", "/v1/vm/inspect/cpu0/regs/rip"),
    ] {
        api.expect(method, target, None, 405);
    }
    for (method, target, allow) in [
        ("GET", "/v1/vm/pause", "POST"),
        ("PUT", "/v1/vm/inspect", "GET"),
        ("DELETE", "/v1/vm/inspect/cpu0", "GET, PUT"),
    ] {
        let r = client::request(&socket, method, target, None).expect("request");
        assert_eq!(r.status, 405);
        assert!(
            r.headers.contains(&("allow".into(), allow.into())),
            "{method} {target}: {:?}",
            r.headers
        );
    }

    // Requests the server cannot or will not read.
    let (status, _) = api.raw("GET", "/", b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _) = api.raw(
        "POST",
        "/v1/vm/stop",
        b"POST /v1/vm/stop HTTP/1.1\r\nContent-Length: 6\r\n\r\n{force",
    );
    assert_eq!(status, 400);
    for body in [
        json!({"timeout_seconds": -1}),
        json!({"timeout_seconds": 3601}),
        json!({"force": "yes"}),
        json!({"fast": true}),
    ] {
        api.expect("POST", "/v1/vm/stop", Some(body), 400);
    }
    let huge = json!({ "force": "x".repeat(MAX_BODY) });
    api.expect("POST", "/v1/vm/stop", Some(huge), 413);
    let long_head = format!("GET /v1/vm HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let (status, _) = api.raw("GET", "/v1/vm", long_head.as_bytes());
    assert_eq!(status, 413);
    assert_eq!(api.state(), "running", "a refused request changed the VM");

    // More connections than the server serves at once: 503.
    let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    let (status, _) = api.call("GET", "/v1/vm", None);
    assert_eq!(status, 503);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.call("GET", "/v1/vm", None).0 == 503 {
        assert!(Instant::now() < deadline, "the server stays busy");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A reboot: the VM stops, and its runner (here the test, as the CLI
    // does) builds it again on the same socket and console.
    let rebooted = api.expect("POST", "/v1/vm/reboot", None, 202);
    assert_eq!(rebooted["rebooting"], true);
    assert!(handle.reboot_requested());
    assert_eq!(running.wait(), StopReason::Reset);
    hub.reopen();
    let running = start_spinner(&hub);
    current.set(running.handle());
    api.wait_for_state("running");

    // The second attach starts where the first stopped: exactly the new
    // VM's line, nothing repeated and nothing lost; `start` shows both.
    let mut second = attach(&socket, "attach");
    let out = read_console(&mut second, SPINNER_LINE.len(), Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out), SPINNER_LINE);
    let more = read_console(&mut second, 1, Duration::from_millis(300));
    assert!(more.is_empty(), "more output than the guest printed");
    drop(second);
    let mut all = attach(&socket, "start");
    let out = read_console(&mut all, 2 * SPINNER_LINE.len(), Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out), SPINNER_LINE.repeat(2));
    drop(all);

    // Stop, forced.
    let stopped = api.expect("POST", "/v1/vm/stop", Some(json!({"force": true})), 200);
    assert_eq!(stopped["shutdown"], "forced");
    assert_eq!(stopped["stop_reason"], "stopped by the user");
    assert_eq!(running.wait(), StopReason::UserQuit);
    // The runner ends the hub when the VM ends for good (as `alcazar run`).
    hub.end();
    let info = api.expect("GET", "/v1/vm", None, 200);
    assert_eq!(info["state"], "stopped");
    assert_eq!(info["stop_reason"], "stopped by the user");
    for action in ["pause", "resume", "stop", "reboot"] {
        api.expect("POST", &format!("/v1/vm/{action}"), None, 409);
    }
    // A stopped VM's console gives what is left, then ends.
    let mut tail = attach(&socket, "start");
    let out = read_console(&mut tail, usize::MAX, Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out), SPINNER_LINE.repeat(2));

    let served: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(api.seen, served, "some operations were not exercised");

    drop(server);
    assert!(!socket.exists(), "the socket outlived the server");
}

#[test]
fn a_stop_without_force_is_forced_when_the_guest_ignores_the_power_button() {
    let dir = TempDir::new("stop");
    let socket = dir.0.join("spinner.sock");
    let hub = Arc::new(ConsoleHub::new());
    let vm = create_spinner(&hub);
    let server = ApiServer::start(&socket, ApiVm::new(vm.handle(), hub)).expect("server");
    let running = vm.start().expect("VM started");
    wait_for_count(&running.handle(), 10);
    let mut api = Api {
        doc: Doc::load(),
        socket: socket.clone(),
        seen: BTreeSet::new(),
    };
    // Paused first: a stop resumes it to press the button.
    api.expect("POST", "/v1/vm/pause", None, 204);
    let began = Instant::now();
    let stopped = api.expect(
        "POST",
        "/v1/vm/stop",
        Some(json!({"timeout_seconds": 0.5})),
        200,
    );
    assert!(began.elapsed() < Duration::from_secs(10));
    // The kit has no ACPI-aware OS: the VMM had to stop it.
    assert_eq!(stopped["shutdown"], "forced");
    assert_eq!(running.wait(), StopReason::UserQuit);
    drop(server);
    assert!(!socket.exists());
}
