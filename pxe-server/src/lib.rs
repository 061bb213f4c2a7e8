//! pxe-server: a network boot server built for whole-cluster boot storms.
//!
//! Protocol logic is sans-IO ([`tftp`]); the [`engine`]s own the sockets.
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod engine;
pub mod hosts;
pub mod http;
pub mod images;
pub mod install;
pub mod journey;
pub mod liveview;
pub mod metrics;
pub mod nextboot;
pub mod observe;
pub mod privilege;
pub mod store;
pub mod templates;
pub mod tftp;
pub mod xdp;
