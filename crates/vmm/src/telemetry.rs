//! Placeholder until the telemetry branch lands.

use alcazar_core::Machine;

/// A snapshot of the VM's counters.
#[derive(Debug, serde::Serialize)]
pub struct Telemetry {
    instructions: Vec<u64>,
}

impl Telemetry {
    /// Takes the snapshot.
    pub fn collect(machine: &Machine) -> Self {
        Telemetry {
            instructions: machine.stats.iter().map(|s| s.instructions()).collect(),
        }
    }

    /// The summary.
    pub fn summary(&self) -> String {
        format!(
            "alcazar: exits per vCPU\n  instructions={:?}\n",
            self.instructions
        )
    }

    /// The Prometheus text.
    pub fn prometheus(&self, vm: &str) -> String {
        let mut s = String::from("# HELP alcazar_instructions_total Guest instructions retired.\n# TYPE alcazar_instructions_total counter\n");
        for (i, n) in self.instructions.iter().enumerate() {
            s.push_str(&format!(
                "alcazar_instructions_total{{vm=\"{vm}\",vcpu=\"{i}\"}} {n}\n"
            ));
        }
        s
    }
}
