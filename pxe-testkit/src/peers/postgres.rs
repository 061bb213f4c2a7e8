//! A real PostgreSQL server (Debian's `postgresql`) as a peer: a cluster made by `initdb` in
//! the test's directory, run as the unprivileged `nobody` (PostgreSQL refuses root), on a
//! Unix socket in that directory and, when asked, on an address inside a test namespace.
//!
//! The cluster has one role, `pxe`, with a password (SCRAM, the only method `pg_hba.conf`
//! allows), written to `<dir>/pg-password` for the server's `password_file`, and one database,
//! `pxe`. Stopped (fast shutdown) on drop; [`Postgres::stop`] and [`Postgres::start_again`]
//! restart it over the same data in the middle of a test.
//!
//! [`Postgres::start_tls_in`] serves TCP with TLS only (`ssl = on`, a `hostssl` line and no
//! plaintext `host` line): a throwaway CA and a server certificate for the namespace address,
//! made with the `openssl` command in the test's directory; [`Postgres::ca_file`] is the CA.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::caps::{cannot_run, require_program};
use crate::netns::Netns;
use crate::process::{Proc, run_command, wait_until};

/// The account the cluster runs as.
const USER: &str = "nobody";
const GROUP: &str = "nogroup";
/// The role and database the servers use.
pub const ROLE: &str = "pxe";
pub const DATABASE: &str = "pxe";
/// The password of [`ROLE`] (a test secret; the server reads it from a file).
const PASSWORD: &str = "pxe-test-password-7f3a";
/// The TCP port on a namespace address.
pub const PORT: u16 = 5432;
/// How long a start or a stop may take.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Where Debian installs the server's programs (`/usr/lib/postgresql/<major>/bin`); the newest
/// major version present. Fails the test as a missing capability when there is none.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => cannot_run(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres): \
             scripts/install-deps.sh installs Debian's postgresql",
        ),
    }
}

/// A running PostgreSQL cluster.
pub struct Postgres {
    proc: Option<Proc>,
    /// `<dir>/pg`: the data directory (`data/`), the socket directory (`run/`), the logs.
    root: PathBuf,
    ns: Option<String>,
    listen: Option<Ipv4Addr>,
    password_file: PathBuf,
    /// The CA certificate, the server's certificate and its key, when TCP is TLS.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    starts: u32,
}

impl Postgres {
    /// Creates a cluster in `<dir>/pg` and starts it on a Unix socket only.
    pub fn start(dir: &Path) -> Postgres {
        Self::start_in(None, dir, None)
    }

    /// Creates a cluster in `<dir>/pg` and starts it inside `ns` (when given), listening on
    /// its Unix socket and on `listen`:[`PORT`] (when given), then creates the role and the
    /// database. Waits (bounded) until it accepts connections.
    pub fn start_in(ns: Option<&Netns>, dir: &Path, listen: Option<Ipv4Addr>) -> Postgres {
        Self::create(ns, dir, listen, false)
    }

    /// [`Postgres::start_in`] listening on `listen`:[`PORT`] with TLS only: the server's
    /// certificate names `listen` (an IP subject alternative name) and chains to a throwaway
    /// CA made for this cluster ([`Postgres::ca_file`]); plaintext TCP is refused.
    pub fn start_tls_in(ns: Option<&Netns>, dir: &Path, listen: Ipv4Addr) -> Postgres {
        Self::create(ns, dir, Some(listen), true)
    }

    fn create(ns: Option<&Netns>, dir: &Path, listen: Option<Ipv4Addr>, tls: bool) -> Postgres {
        let root = dir.join("pg");
        let run_dir = root.join("run");
        let data = root.join("data");
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        // The account must reach its directories through the test's (root-owned) ones, and
        // any client (the server's service account) must reach the socket.
        for p in dir.ancestors().take_while(|p| *p != Path::new("/")) {
            let mode = std::fs::metadata(p)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011));
            }
        }
        chown_nobody(&root);
        chown_nobody(&run_dir);
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()));
        let pwfile = root.join("initdb-password");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_nobody(&pwfile);
        let mut initdb = as_nobody(&bin_dir().join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let run = run_command(initdb, Duration::from_secs(120));
        assert!(run.success(), "initdb failed:\n{}", run.all());
        let _ = std::fs::remove_file(&pwfile);
        // The server's password file, readable by whoever the server runs as.
        let password_file = root.join("pg-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut hba = String::from("local all all scram-sha-256\n");
        let tls = match listen {
            Some(addr) if tls => {
                hba.push_str("hostssl all all 0.0.0.0/0 scram-sha-256\n");
                Some(server_certificate(&root, addr))
            }
            Some(_) => {
                hba.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
                None
            }
            None => None,
        };
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let mut pg = Postgres {
            proc: None,
            root,
            ns: ns.map(|n| n.name().to_owned()),
            listen,
            password_file,
            tls,
            starts: 0,
        };
        pg.start_again();
        pg.psql_as_owner(&format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"));
        pg
    }

    /// Starts the server over the existing data (after [`Postgres::stop`]) and waits until it
    /// accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "PostgreSQL already runs");
        let program = bin_dir().join("postgres");
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"]);
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.args([
            &format!("--reuid={USER}"),
            &format!("--regid={GROUP}"),
            "--clear-groups",
            "--",
        ])
        .arg(&program)
        .arg("-D")
        .arg(self.root.join("data"))
        .arg("-k")
        .arg(self.root.join("run"))
        .arg("-p")
        .arg(PORT.to_string())
        .arg("-c")
        .arg(format!(
            "listen_addresses={}",
            self.listen.map_or(String::new(), |a| a.to_string())
        ))
        // Sized for several servers' pools plus the tests' own connections.
        .args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"])
        .args(["-c", "unix_socket_permissions=0777"]);
        if let Some((_, cert, key)) = &self.tls {
            cmd.args(["-c", "ssl=on", "-c"])
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        self.starts += 1;
        let tag = format!("postgres-{}", self.starts);
        let mut proc = Proc::spawn(cmd, &self.root, &tag);
        let ready = wait_until(READY_WITHIN, || {
            assert!(proc.is_running(), "postgres exited:\n{}", proc.stderr());
            self.socket_file().exists() && self.psql("postgres", "SELECT 1").is_some()
        });
        assert!(
            ready,
            "postgres not ready in {READY_WITHIN:?}:\n{}",
            proc.stderr()
        );
        self.proc = Some(proc);
    }

    /// Stops the server (fast shutdown: sessions are ended, committed work is on disk) and
    /// waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(rustix::process::Signal::INT);
            if p.wait_timeout(READY_WITHIN).is_none() {
                p.kill();
            }
        }
    }

    /// Kills the server at once (SIGKILL to the postmaster; its backends end when they notice).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Whether the server runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// The directory of the Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn socket_file(&self) -> PathBuf {
        self.socket_dir().join(format!(".s.PGSQL.{PORT}"))
    }

    /// A URL over the Unix socket (`postgres://pxe@%2F...%2Frun/pxe`), no password in it.
    pub fn socket_url(&self) -> String {
        let dir = self.socket_dir().display().to_string().replace('/', "%2F");
        format!("postgres://{ROLE}@{dir}:{PORT}/{DATABASE}")
    }

    /// A URL over TCP to the namespace address, no password in it.
    pub fn tcp_url(&self) -> String {
        let a = self.listen.expect("PostgreSQL listens on no address");
        format!("postgres://{ROLE}@{a}:{PORT}/{DATABASE}")
    }

    /// The CA the server's certificate chains to (what `[store] ca_file` names), when the
    /// cluster was started with [`Postgres::start_tls_in`].
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(ca, _, _)| ca.as_path())
    }

    /// The file holding [`ROLE`]'s password (what `[store] password_file` names).
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// Runs `sql` in the `pxe` database with `psql`; the unaligned, tuples-only output.
    /// Fails the test if psql fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("psql failed on {sql:?}: {}", self.log()))
    }

    /// [`Postgres::sql`], `None` when psql fails (the server is not up).
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        self.psql(DATABASE, sql)
    }

    fn psql_as_owner(&self, sql: &str) {
        let out = self.psql("postgres", sql);
        assert!(out.is_some(), "psql failed on {sql:?}:\n{}", self.log());
    }

    fn psql(&self, db: &str, sql: &str) -> Option<String> {
        let mut cmd = Command::new(bin_dir().join("psql"));
        cmd.env("PGPASSWORD", PASSWORD)
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string(), "-U", ROLE, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let run = run_command(cmd, Duration::from_secs(30));
        run.success().then(|| run.stdout.trim_end().to_owned())
    }

    /// The server's log so far (all its starts).
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.root.join(format!("postgres-{i}.err")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}\n--- end ---", self.log());
        }
        self.stop();
    }
}

fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={USER}"),
        &format!("--regid={GROUP}"),
        "--clear-groups",
        "--",
    ])
    .arg(program);
    // initdb looks at its working directory; root's may not be readable by nobody.
    cmd.current_dir("/");
    cmd
}

fn chown_nobody(p: &Path) {
    let run = run_command(
        {
            let mut c = Command::new("chown");
            c.arg(format!("{USER}:{GROUP}")).arg(p);
            c
        },
        Duration::from_secs(10),
    );
    assert!(run.success(), "chown {}: {}", p.display(), run.all());
}

/// Runs `openssl` with `args` in `dir`; fails the test when it is missing or fails.
fn openssl(dir: &Path, args: &[&str]) {
    require_program("openssl");
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let run = run_command(cmd, Duration::from_secs(60));
    assert!(run.success(), "openssl {args:?}: {}", run.all());
}

/// Makes a throwaway certificate authority in `dir`: `<name>.pem` (returned) and `<name>.key`.
/// A test's "wrong CA" is another one of these.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(pem)
}

/// A CA in `root` and a server certificate for `addr` signed by it; the key owned by the
/// cluster's account, mode 0600 (PostgreSQL refuses a key others can read).
fn server_certificate(root: &Path, addr: Ipv4Addr) -> (PathBuf, PathBuf, PathBuf) {
    let ca = make_ca(root, "pg-ca");
    std::fs::write(
        root.join("server.ext"),
        format!(
            "subjectAltName=IP:{addr}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        root,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={addr}"),
        ],
    );
    openssl(
        root,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "pg-ca.pem",
            "-CAkey",
            "pg-ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    let (cert, key) = (root.join("server.pem"), root.join("server.key"));
    chown_nobody(&key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
    (ca, cert, key)
}
