//! Fuzzes the API a client on the control socket speaks: arbitrary bytes
//! through `alcazar_control::api::http::read_request` (request line, headers,
//! Content-Length, percent-encoding, the body), and every request that
//! parses through `alcazar_control::api::routes::route` against a VM that was
//! created but never started (one small emu-engine VM whose flat image is
//! one `hlt`, built once per process).
//!
//! Asserts, whatever the client sends: no panic; a request that does not
//! parse is an error, not a hang; a routed request is answered with an
//! HTTP status from 100 to 599 and serializes. `POST /v1/vm/stop` and
//! `/v1/vm/reboot` are not routed (they end the shared VM for every
//! later input, and stop waits up to its timeout); the console upgrade
//! is routed (it only answers what to do), never carried out.
//!
//! Input: the bytes of the request as they come from the socket.

#![no_main]

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};

use alcazar_control::api::http::read_request;
use alcazar_control::api::routes::{route, Routed};
use alcazar_control::api::ApiVm;
use alcazar_control::hub::ConsoleHub;
use alcazar_vmm::config::{BootSource, ConsoleTarget, EngineChoice, FlatImage, FlatMode};
use alcazar_vmm::{Vm, VmConfig};
use libfuzzer_sys::fuzz_target;

/// The VM every request goes to: created, never started.
fn api() -> &'static Arc<ApiVm> {
    static API: OnceLock<Arc<ApiVm>> = OnceLock::new();
    static KEEP: AtomicPtr<Vm> = AtomicPtr::new(std::ptr::null_mut());
    API.get_or_init(|| {
        // The guest never runs: one `hlt` is enough to build the machine.
        let config = VmConfig {
            name: "fuzz".into(),
            engine: EngineChoice::Emu,
            memory: 16 << 20,
            serial: ConsoleTarget::None,
            ..VmConfig::new(BootSource::Flat {
                image: FlatImage::Bytes(vec![0xf4]),
                mode: FlatMode::Real,
                load_address: 0x10000,
                aps_wait_for_sipi: false,
            })
        };
        let vm = Vm::create(&config).expect("the VM");
        let api = ApiVm::new(vm.handle(), Arc::new(ConsoleHub::new()));
        // The VM lives as long as the process (kept reachable, so the
        // leak checker does not report it).
        KEEP.store(Box::into_raw(Box::new(vm)), Ordering::SeqCst);
        api
    })
}

fuzz_target!(|data: &[u8]| {
    let api = api();
    let mut stream = data;
    let Ok(req) = read_request(&mut stream) else {
        return;
    };
    let path = req.path.trim_end_matches('/');
    if req.method == "POST" && (path == "/v1/vm/stop" || path == "/v1/vm/reboot") {
        return;
    }
    match route(api, &req) {
        Routed::Reply(response) => {
            assert!(
                (100..600).contains(&response.status),
                "status {}",
                response.status
            );
            let mut out = Vec::new();
            response.write_to(&mut out).expect("a Vec takes it");
        }
        Routed::Console { .. } => {}
    }
});
