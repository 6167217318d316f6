//! virtio-rng: an entropy source (virtio 1.2 §5.4).
//!
//! One queue (`requestq`, index 0). Each chain the driver offers is a
//! device-writable buffer; the device fills it with bytes from the host's
//! randomness (`/dev/urandom`) and returns it as used with the count
//! written. No features beyond `VIRTIO_F_VERSION_1`, no configuration
//! space. In a Linux guest it is `/dev/hwrng`.
//!
//! At most [`MAX_FILL`] bytes go into one chain, so a guest offering a
//! huge buffer cannot make the vCPU thread read megabytes at once.

use std::fs::File;
use std::io::Read;

use virtio_queue::QueueT;

use super::chain::{complete, pop_chain};
use super::{ActivateError, Activation, DeviceType, SingleQueue, VirtioDevice};

/// The size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one request gets.
pub const MAX_FILL: usize = 64 * 1024;

/// The virtio entropy device.
pub struct VirtioRng {
    source: File,
    active: Option<SingleQueue>,
    bytes_served: u64,
    requests: u64,
}

impl std::fmt::Debug for VirtioRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioRng")
            .field("bytes_served", &self.bytes_served)
            .finish_non_exhaustive()
    }
}

impl VirtioRng {
    /// An entropy device reading the host's `/dev/urandom`.
    pub fn new() -> std::io::Result<Self> {
        Ok(VirtioRng {
            source: File::open("/dev/urandom")?,
            active: None,
            bytes_served: 0,
            requests: 0,
        })
    }

    /// Serves every chain the driver has made available.
    fn serve(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; MAX_FILL];
        while let Some((head, parsed)) = pop_chain(
            &mut active.queue,
            &active.memory,
            u64::from(u32::MAX),
            active.interrupt.as_ref(),
        ) {
            let written = match parsed {
                Ok(chain) => {
                    let want = (chain.writable_len() as usize).min(MAX_FILL);
                    match self.source.read(&mut buf[..want]) {
                        Ok(n) => chain.write_at(&active.memory, 0, &buf[..n]),
                        Err(e) => {
                            tracing::warn!("virtio-rng: reading host randomness failed: {e}");
                            0
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("virtio-rng: bad chain: {e}");
                    0
                }
            };
            self.requests += 1;
            self.bytes_served += written as u64;
            complete(
                &mut active.queue,
                0,
                &active.memory,
                head,
                written as u32,
                active.interrupt.as_ref(),
            );
        }
    }
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> DeviceType {
        DeviceType::Rng
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        super::VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.active = Some(activation.into_single_queue()?);
        self.serve();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        if queue == 0 {
            self.serve();
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn inspect(&self) -> Vec<(String, String)> {
        let mut values = vec![
            ("requests".into(), self.requests.to_string()),
            ("bytes_served".into(), self.bytes_served.to_string()),
        ];
        if let Some(a) = &self.active {
            values.push(("next_avail".into(), a.queue.next_avail().to_string()));
            values.push(("next_used".into(), a.queue.next_used().to_string()));
        }
        values
    }
}
