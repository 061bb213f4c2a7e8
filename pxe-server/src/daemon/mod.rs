//! The running daemon: the control socket's typed [`messages`].

pub mod messages;
#[cfg(test)]
mod tests;
