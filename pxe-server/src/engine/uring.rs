//! io_uring engine. OWNER: uring helper.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{EngineError, EngineParams};
use crate::tftp::service::TftpService;

/// Checks that io_uring can be used here (not disabled by sysctl or seccomp), and why not.
pub fn probe() -> Result<(), String> {
    unimplemented!()
}

pub fn run(
    _service: Arc<TftpService>,
    _params: &EngineParams,
    _shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    unimplemented!()
}
