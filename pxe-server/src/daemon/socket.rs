//! The control socket: a running server answers `pxe-server status` on a Unix stream socket
//! (`[control] socket`).
//!
//! The protocol: the client sends one request line (`status`, or `host ACTION SELECTOR`, at
//! most [`MAX_REQUEST`] bytes, within [`IO_TIMEOUT`]), the server answers with one JSON
//! document and closes the connection (the messages: [`crate::daemon::messages`]). The socket
//! file is created mode 0600 (root reads the counters, nobody else); a socket file left by a
//! crashed run is replaced, while one a live server answers on refuses the start (two servers
//! would otherwise silently steal each other's status).

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::messages::Request;

/// How long a client may take to send its request or read the answer before it is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request line.
pub const MAX_REQUEST: u64 = 4096;
/// Largest document (status, hosts) a client accepts.
const MAX_DOCUMENT: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another pxe-server answers there (set [control] socket)")]
    InUse { path: PathBuf },
    #[error("control socket {path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("status from {path}: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The listening control socket. Dropping it removes the socket file (if it is still ours).
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    identity: (u64, u64),
    /// The socket's directory, when this bind created it.
    created_dir: Option<PathBuf>,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket file; refuses when a live server answers there.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                tracing::info!(path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let mut created_dir = None;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                created_dir = Some(dir.to_path_buf());
            }
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let listener = UnixListener::bind(path).map_err(io_err(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
        listener.set_nonblocking(true).map_err(io_err(path))?;
        let m = std::fs::symlink_metadata(path).map_err(io_err(path))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: (m.dev(), m.ino()),
            created_dir,
        })
    }

    /// The directory this bind created for the socket (`/run/pxe-server` by default), which the
    /// service account gets so that it can remove the socket at exit; `None` when it existed.
    pub fn created_dir(&self) -> Option<&Path> {
        self.created_dir.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers every connection waiting now: reads its request line and writes what
    /// `handle(request)` returns; returns how many were answered. A client that sends nothing
    /// or reads nothing costs at most [`IO_TIMEOUT`] each way.
    pub fn serve_pending(&self, mut handle: impl FnMut(&str) -> String) -> usize {
        let mut served = 0;
        // Bounded: at most 64 clients per call, the rest wait for the next call.
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(%e, "control socket accept");
                    break;
                }
            };
            let answered = stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .and_then(|()| read_request(&stream))
                .and_then(|request| {
                    let doc = handle(&request);
                    (&stream).write_all(doc.as_bytes())?;
                    (&stream).write_all(b"\n")
                });
            match answered {
                Ok(()) => served += 1,
                Err(e) => tracing::debug!(%e, "control client dropped"),
            }
        }
        served
    }
}

/// One request line (without its newline); an over-long or non-UTF-8 line is an error.
fn read_request(stream: &UnixStream) -> std::io::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(stream.take(MAX_REQUEST + 1)).read_line(&mut line)?;
    if line.len() as u64 > MAX_REQUEST {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request line too long",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Remove the file only if it is still the one we bound (not a successor's).
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Sends `request` to the server on `path` and returns its JSON answer.
pub fn request(
    path: &Path,
    request: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(io_err(path))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io_err(path))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io_err(path))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io_err(path))?;
    let mut text = String::new();
    stream
        .take(MAX_DOCUMENT)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| ControlError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Asks the server on `path` for its status document.
pub fn request_status(path: &Path, timeout: Duration) -> Result<serde_json::Value, ControlError> {
    request(path, &Request::Status.to_string(), timeout)
}

/// The status document as indented `key: value` lines for a person.
pub fn render_text(v: &serde_json::Value) -> String {
    let mut out = String::new();
    render_into(&mut out, v, 0);
    out
}

fn render_into(out: &mut String, v: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    let indent = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{indent}{k}:\n"));
                        render_into(out, v, depth + 1);
                    }
                    Value::Array(a) if a.iter().any(|e| e.is_object()) => {
                        out.push_str(&format!("{indent}{k}:\n"));
                        for e in a {
                            out.push_str(&format!("{indent}  -\n"));
                            render_into(out, e, depth + 2);
                        }
                    }
                    _ => out.push_str(&format!("{indent}{k}: {}\n", scalar(v))),
                }
            }
        }
        other => out.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(m) if m.is_empty() => "-".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_status_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ctl.sock");
        let sock = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nobody waiting: nothing served, nothing computed.
        assert_eq!(sock.serve_pending(|_| panic!("no client")), 0);
        let client = std::thread::spawn({
            let path = path.clone();
            move || request_status(&path, Duration::from_secs(5))
        });
        let mut served = 0;
        for _ in 0..500 {
            served += sock.serve_pending(|req| {
                assert_eq!(req, "status");
                r#"{"tftp":{"sessions":3}}"#.to_owned()
            });
            if served > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(served, 1);
        let v = client.join().unwrap().unwrap();
        assert_eq!(v["tftp"]["sessions"], 3);
        // A second server on the same path is refused while the first lives.
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::InUse { .. })
        ));
        drop(sock);
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        // A socket file nobody listens on (a crashed run).
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let sock = ControlSocket::bind(&path).unwrap();
        drop(sock);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            ControlSocket::bind(&file),
            Err(ControlError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn no_server_and_bad_answers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        assert!(matches!(
            request_status(&path, Duration::from_secs(1)),
            Err(ControlError::Io { .. })
        ));
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut req).unwrap();
            assert_eq!(req, "status\n");
            s.write_all(b"not json").unwrap();
        });
        let r = request_status(&path, Duration::from_secs(5));
        t.join().unwrap();
        assert!(matches!(r, Err(ControlError::BadAnswer { .. })), "{r:?}");
    }

    #[test]
    fn requests_are_bounded_and_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let sock = ControlSocket::bind(&path).unwrap();
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let long = "x".repeat(MAX_REQUEST as usize + 10);
                let r1 = request(&path, &long, Duration::from_secs(5));
                let r2 = request(&path, "host show all", Duration::from_secs(5));
                (r1, r2)
            }
        });
        let mut seen = Vec::new();
        for _ in 0..500 {
            sock.serve_pending(|req| {
                seen.push(req.to_owned());
                format!("{{\"echo\":{}}}", serde_json::Value::from(req))
            });
            if seen.len() == 1 && client.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (r1, r2) = client.join().unwrap();
        // The over-long request got no answer; the next one was answered.
        assert!(r1.is_err(), "{r1:?}");
        assert_eq!(r2.unwrap()["echo"], "host show all");
        assert_eq!(seen, vec!["host show all".to_owned()]);
    }

    #[test]
    fn text_rendering() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"pid":7,"reload":null,"tftp":{"engine":"uring","metrics":{"sent":5}},
                "filter":{"interfaces":[{"name":"eth0","placement":"skb"}],"restart":["a","b"]}}"#,
        )
        .unwrap();
        assert_eq!(
            render_text(&v),
            "pid: 7\nreload: -\ntftp:\n  engine: uring\n  metrics:\n    sent: 5\n\
             filter:\n  interfaces:\n    -\n      name: eth0\n      placement: skb\n  restart: a, b\n"
        );
    }
}
