//! Types shared between the XDP program and the userspace loader.
//!
//! The XDP program itself arrives with issue #4; this library target is compiled for the host
//! too, so it stays `no_std` and free of dependencies.
#![no_std]
