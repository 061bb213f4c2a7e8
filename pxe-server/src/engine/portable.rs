//! Portable engine (no io_uring). OWNER: portable helper.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{EngineError, EngineParams};
use crate::tftp::service::TftpService;

pub fn run(
    _service: Arc<TftpService>,
    _params: &EngineParams,
    _shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    unimplemented!()
}
