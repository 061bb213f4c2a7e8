//! Install templates (minijinja): kickstart, preseed, cloud-init/autoinstall files and the
//! iPXE scripts themselves, rendered per host.
//!
//! Every regular file in `[install] templates` (and its subdirectories, by relative path with
//! `/`) is a template; two are built in and may be overridden by files of the same name:
//! `ipxe/install.ipxe` (kernel + initrd + command line over HTTP) and `ipxe/local.ipxe` (boot
//! the local disk). Undefined variables are errors (strict mode), so a typo is caught when
//! the configuration is loaded: [`Templates::check`] renders every template for every host
//! and reports the first failure with the template's file and line.
//!
//! The context a template sees ([`host_context`]):
//! - `server_url`: how clients reach our HTTP service (`[install] server_url`);
//! - `host`: `name`, `hostname`, `mac`, `uuid`, `address`, `key`, `next_boot` (strings or
//!   none), and the host's secret install URLs: `token` (32 hex digits), `install_url`
//!   (`SERVER/install/KEY/TOKEN`: append `/ks.cfg`, `/preseed.cfg`, `/` for cloud-init) and
//!   `done_url` (`SERVER/done/KEY/TOKEN`, the callback, POST only). A machine without an
//!   entry (and a request from an address that is not the host's) renders with these three
//!   none: the token goes only where it belongs;
//! - `profile`: the host's boot profile over `[boot]`: `kernel`, `initrd`, `cmdline` (itself
//!   rendered as a template first), the boot files;
//! - `vars`: `[install] vars` overlaid with the host's `vars`.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

use crate::hosts::{BootProfile, HostConfig, NextBoot};

/// Name of the built-in iPXE script for a host whose next boot is `install`.
pub const IPXE_INSTALL: &str = "ipxe/install.ipxe";
/// Name of the built-in iPXE script for a host whose next boot is `local`.
pub const IPXE_LOCAL: &str = "ipxe/local.ipxe";
/// A template file larger than this is refused (they are text files).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// Files looked at in the templates directory (bounded walk).
const MAX_TEMPLATES: usize = 1024;

const BUILTIN_INSTALL: &str = "#!ipxe
# {{ host.name }}: install ({{ profile.kernel }})
kernel {{ server_url }}/{{ profile.kernel }} initrd=initrd {{ profile.cmdline }}
initrd --name initrd {{ server_url }}/{{ profile.initrd }}
boot
";

const BUILTIN_LOCAL: &str = "#!ipxe
# {{ host.name }}: boot from the local disk
iseq ${platform} efi && exit ||
sanboot --no-describe --drive 0x80 || exit
";

/// A template that cannot be used: `file:line: reason`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{}:{line}: {reason}", file.display())]
pub struct TemplateError {
    pub file: PathBuf,
    /// 1-based; 0 when not tied to a line.
    pub line: usize,
    pub reason: String,
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
    dir: Option<PathBuf>,
    names: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("names", &self.names)
            .finish()
    }
}

impl Templates {
    /// The built-ins plus every file under `dir` (if given), compiled.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Files end with a newline and so must what they render (kickstart, shell snippets).
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        let mut sources: Vec<(String, String, PathBuf)> = vec![
            (
                IPXE_INSTALL.into(),
                BUILTIN_INSTALL.into(),
                PathBuf::from("(built-in) ipxe/install.ipxe"),
            ),
            (
                IPXE_LOCAL.into(),
                BUILTIN_LOCAL.into(),
                PathBuf::from("(built-in) ipxe/local.ipxe"),
            ),
        ];
        if let Some(dir) = dir {
            for (name, path) in list_files(dir)? {
                let io = |e: std::io::Error| TemplateError {
                    file: path.clone(),
                    line: 0,
                    reason: format!("cannot read: {e}"),
                };
                let len = std::fs::metadata(&path).map_err(io)?.len();
                if len > MAX_TEMPLATE_BYTES {
                    return Err(TemplateError {
                        file: path,
                        line: 0,
                        reason: format!("{len} bytes: templates are at most {MAX_TEMPLATE_BYTES}"),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(io)?;
                sources.retain(|(n, _, _)| *n != name);
                sources.push((name, text, path));
            }
        }
        let mut names = Vec::new();
        for (name, text, path) in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| error_at(&path, &e))?;
            names.push(name);
        }
        names.sort();
        Ok(Templates {
            env,
            dir: dir.map(Path::to_path_buf),
            names,
        })
    }

    /// Template names (relative paths), sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Where `name` comes from, for error messages.
    fn file_of(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(d) if d.join(name).is_file() => d.join(name),
            _ => PathBuf::from(format!("(built-in) {name}")),
        }
    }

    /// Renders `name` with `ctx` (see [`host_context`]).
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        let t = self.env.get_template(name).map_err(|e| TemplateError {
            file: PathBuf::from(name),
            line: 0,
            reason: e.to_string(),
        })?;
        t.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| error_at(&self.file_of(name), &e))
    }

    /// Renders every template once with each context (`(label, context)`), so that an
    /// undefined variable or a failing filter is found at load, not at boot time.
    pub fn check<'a>(
        &self,
        contexts: impl IntoIterator<Item = (String, &'a serde_json::Value)>,
    ) -> Result<(), TemplateError> {
        for (label, ctx) in contexts {
            for name in &self.names {
                self.render(name, ctx).map_err(|mut e| {
                    e.reason = format!("{} (rendering for {label})", e.reason);
                    e
                })?;
            }
        }
        Ok(())
    }
}

/// Renders a one-off template string (a profile's `cmdline`) with `ctx`.
pub fn render_str(text: &str, ctx: &serde_json::Value) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.render_str(text, minijinja::Value::from(minijinja::value::Serde(ctx)))
}

fn error_at(file: &Path, e: &minijinja::Error) -> TemplateError {
    TemplateError {
        file: file.to_path_buf(),
        line: e.line().unwrap_or(0),
        reason: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    }
}

/// Regular files under `dir` (depth at most 4), as (relative name with `/`, path).
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, TemplateError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TemplateError {
            file: d.clone(),
            line: 0,
            reason: format!("cannot read the templates directory: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() && depth < 4 {
                stack.push((path, depth + 1));
            } else if ft.is_file() {
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if name.starts_with('.') || name.contains("/.") {
                    continue; // editor swap files, .git
                }
                out.push((name, path));
                if out.len() > MAX_TEMPLATES {
                    return Err(TemplateError {
                        file: dir.to_path_buf(),
                        line: 0,
                        reason: format!("more than {MAX_TEMPLATES} files"),
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The rendering context for `host` (or the default profile alone when `None`): see the module
/// documentation. `address` is the host's current address (a reservation or a lease), if known;
/// `token` its install token (hex), which makes its `install_url` and `done_url`.
/// The profile's `cmdline` is rendered here (it may use every other value).
pub fn host_context(
    server_url: &str,
    default_profile: &BootProfile,
    install_vars: &toml::Table,
    host: Option<&HostConfig>,
    address: Option<std::net::Ipv4Addr>,
    token: Option<&str>,
    next_boot: NextBoot,
) -> Result<serde_json::Value, minijinja::Error> {
    let server_url = server_url.trim_end_matches('/');
    let profile = match host {
        Some(h) => h.boot.or(default_profile),
        None => default_profile.clone(),
    };
    let mut vars = serde_json::Map::new();
    for (k, v) in install_vars {
        vars.insert(k.clone(), toml_to_json(v));
    }
    if let Some(h) = host {
        for (k, v) in &h.vars {
            vars.insert(k.clone(), toml_to_json(v));
        }
    }
    let address = address.or_else(|| host.and_then(|h| h.address));
    let key = host.and_then(HostConfig::key);
    let token = token.filter(|_| key.is_some());
    let url = |route: &str| {
        key.as_deref()
            .zip(token)
            .map(|(k, t)| format!("{server_url}/{route}/{k}/{t}"))
    };
    let host_json = serde_json::json!({
        "name": host.map_or_else(|| "unknown".to_owned(), HostConfig::label),
        "hostname": host.and_then(|h| h.hostname.clone()),
        "mac": host.and_then(|h| h.mac).map(|m| m.to_string()),
        "uuid": host.and_then(|h| h.uuid).map(|u| u.to_string()),
        "address": address.map(|a| a.to_string()),
        "key": key,
        "next_boot": next_boot.name(),
        "token": token,
        "install_url": url("install"),
        "done_url": url("done"),
    });
    let mut ctx = serde_json::json!({
        "server_url": server_url,
        "host": host_json,
        "vars": vars,
        "profile": {
            "kernel": profile.kernel,
            "initrd": profile.initrd,
            "cmdline": null,
            "bios": profile.bios,
            "uefi_x64": profile.uefi_x64,
            "arm64": profile.arm64,
        },
    });
    let cmdline = match &profile.cmdline {
        Some(c) => render_str(c, &ctx)?,
        None => String::new(),
    };
    ctx["profile"]["cmdline"] = serde_json::Value::String(cmdline);
    Ok(ctx)
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, mac: &str, vars: &str) -> HostConfig {
        HostConfig {
            mac: Some(mac.parse().unwrap()),
            uuid: None,
            hostname: Some(name.into()),
            address: Some("10.0.0.21".parse().unwrap()),
            boot: BootProfile::default(),
            next_boot: NextBoot::Install,
            vars: toml::from_str(vars).unwrap(),
        }
    }

    fn profile() -> BootProfile {
        BootProfile {
            kernel: Some("vmlinuz".into()),
            initrd: Some("initrd.img".into()),
            cmdline: Some("inst.ks={{ host.install_url }}/ks.cfg quiet".into()),
            ..BootProfile::default()
        }
    }

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    /// The example templates shipped in config/templates render for a host with every
    /// optional value and for one with none (strict mode: a typo would fail here), and each
    /// ends its install by calling back the host's own /done URL.
    #[test]
    fn shipped_example_templates_render_with_and_without_values() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates");
        let t = Templates::load(Some(&dir)).unwrap();
        for name in ["ks.cfg", "preseed.cfg", "user-data", "meta-data"] {
            assert!(t.has(name), "{name} missing from {}", dir.display());
        }
        let full = host(
            "gpu7",
            "52:54:00:00:00:07",
            "role = \"gpu\"\ntimezone = \"Europe/Paris\"\nssh_key = \"ssh-ed25519 AAAA k\"\n\
             root_password_hash = \"$6$x$y\"\npassword_hash = \"$6$x$z\"\nmirror = \"10.0.0.5\"",
        );
        let mut bare = host("n8", "52:54:00:00:00:08", "");
        bare.hostname = None;
        let site = toml::Table::new();
        for (h, rich) in [(&full, true), (&bare, false)] {
            let ctx = host_context(
                "http://10.0.0.1",
                &profile(),
                &site,
                Some(h),
                None,
                Some(TOKEN),
                NextBoot::Install,
            )
            .unwrap();
            let done = format!("http://10.0.0.1/done/mac:{}/{TOKEN}", h.mac.unwrap());
            let ks = t.render("ks.cfg", &ctx).unwrap();
            let post = &ks[ks.find("%post").expect("a %post section")..];
            assert!(
                post.contains(&format!("curl -fsS --retry 5 -X POST {done}\n%end")),
                "{ks}"
            );
            let preseed = t.render("preseed.cfg", &ctx).unwrap();
            let late: Vec<&str> = preseed
                .lines()
                .filter(|l| l.starts_with("d-i preseed/late_command"))
                .collect();
            assert_eq!(late.len(), 1, "{preseed}");
            assert!(
                late[0].ends_with(&format!("wget -q -O /dev/null --post-data=done {done}")),
                "{preseed}"
            );
            let user_data = t.render("user-data", &ctx).unwrap();
            assert!(user_data.starts_with("#cloud-config\n# "), "{user_data}");
            assert!(user_data.contains(&format!("    - curl -fsS --retry 5 -X POST {done}\n")));
            let meta = t.render("meta-data", &ctx).unwrap();
            assert!(meta.starts_with(&format!("instance-id: mac:{}\n", h.mac.unwrap())));
            if rich {
                assert!(ks.contains("timezone Europe/Paris --utc\n"), "{ks}");
                assert!(ks.contains("--hostname=gpu7\n"), "{ks}");
                assert!(ks.contains("rootpw --iscrypted $6$x$y\n"), "{ks}");
                assert!(
                    ks.contains("sshkey --username=root \"ssh-ed25519 AAAA k\"\n"),
                    "{ks}"
                );
                assert!(ks.contains("\npciutils\n"), "{ks}");
                assert!(preseed.contains("hostname string 10.0.0.5\n"), "{preseed}");
                assert!(preseed.contains("authorized_keys;"), "{preseed}");
                assert!(preseed.contains(
                    "make-user boolean false\nd-i passwd/root-password-crypted password $6$x$y\n"
                ));
                assert!(user_data.contains("    hostname: gpu7\n"), "{user_data}");
                assert!(user_data.contains("      - \"ssh-ed25519 AAAA k\"\n"));
                assert!(meta.ends_with("local-hostname: gpu7\n"), "{meta}");
            } else {
                assert!(ks.contains("timezone UTC --utc\n"), "{ks}");
                assert!(ks.contains("--activate\nrootpw --lock\n"), "{ks}");
                assert!(!ks.contains("sshkey") && !ks.contains("pciutils"), "{ks}");
                assert!(
                    preseed.contains("passwd/root-login boolean false\n"),
                    "{preseed}"
                );
                assert!(!preseed.contains("make-user boolean false"), "{preseed}");
                assert!(user_data.contains("    hostname: ubuntu\n"), "{user_data}");
                assert!(!user_data.contains("authorized-keys"), "{user_data}");
            }
        }
    }

    #[test]
    fn per_host_rendering_and_builtins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ks")).unwrap();
        std::fs::write(
            dir.path().join("ks/compute.cfg"),
            "network --hostname={{ host.hostname }} --ip={{ host.address }}\n\
             # role {{ vars.role }} disk {{ vars.disk }}\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.names(), [IPXE_INSTALL, IPXE_LOCAL, "ks/compute.cfg"]);
        let site: toml::Table = toml::from_str("role = \"compute\"\ndisk = \"sda\"").unwrap();
        let (a, b) = (
            host("n1", "52:54:00:00:00:01", ""),
            host("n2", "52:54:00:00:00:02", "disk = \"nvme0n1\""),
        );
        let ca = host_context(
            "http://10.0.0.1/",
            &profile(),
            &site,
            Some(&a),
            None,
            Some(TOKEN),
            NextBoot::Install,
        )
        .unwrap();
        let cb = host_context(
            "http://10.0.0.1",
            &profile(),
            &site,
            Some(&b),
            Some("10.0.0.77".parse().unwrap()),
            Some(TOKEN),
            NextBoot::Install,
        )
        .unwrap();
        assert_eq!(
            t.render("ks/compute.cfg", &ca).unwrap(),
            "network --hostname=n1 --ip=10.0.0.21\n# role compute disk sda\n"
        );
        assert_eq!(
            t.render("ks/compute.cfg", &cb).unwrap(),
            "network --hostname=n2 --ip=10.0.0.77\n# role compute disk nvme0n1\n"
        );
        let script = t.render(IPXE_INSTALL, &ca).unwrap();
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        assert!(
            script.contains(
                "kernel http://10.0.0.1/vmlinuz initrd=initrd \
                 inst.ks=http://10.0.0.1/install/mac:52:54:00:00:00:01/00112233445566778899aabbccddeeff/ks.cfg quiet\n"
            ),
            "{script}"
        );
        assert!(script.contains("initrd --name initrd http://10.0.0.1/initrd.img\n"));
        assert!(t.render(IPXE_LOCAL, &ca).unwrap().contains("sanboot"));
        assert_eq!(ca["host"]["token"], TOKEN);
        assert_eq!(
            ca["host"]["done_url"],
            format!("http://10.0.0.1/done/mac:52:54:00:00:00:01/{TOKEN}")
        );
        // No token (a stranger's request, a machine without an entry): no secret URLs.
        let bare = host_context(
            "http://10.0.0.1",
            &BootProfile::default(),
            &site,
            Some(&a),
            None,
            None,
            NextBoot::Install,
        )
        .unwrap();
        for k in ["token", "install_url", "done_url"] {
            assert!(bare["host"][k].is_null(), "{k}: {bare}");
        }
        t.check([("n1".to_owned(), &ca), ("n2".to_owned(), &cb)])
            .unwrap();
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.cfg"), "line one\n{% if %}\n").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err();
        assert_eq!(
            (e.file.clone(), e.line),
            (dir.path().join("bad.cfg"), 2),
            "{e}"
        );
        assert!(e.to_string().contains("bad.cfg:2: syntax error"), "{e}");

        std::fs::write(dir.path().join("bad.cfg"), "a\nb\n{{ vars.missing }}\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let h = host("n1", "52:54:00:00:00:01", "");
        let ctx = host_context(
            "http://x",
            &profile(),
            &toml::Table::new(),
            Some(&h),
            None,
            None,
            NextBoot::Local,
        )
        .unwrap();
        let e = t.check([("n1".to_owned(), &ctx)]).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("undefined"), "{e}");
        assert!(e.reason.contains("rendering for n1"), "{e}");

        // An override of a built-in replaces it.
        std::fs::remove_file(dir.path().join("bad.cfg")).unwrap();
        std::fs::create_dir(dir.path().join("ipxe")).unwrap();
        std::fs::write(dir.path().join("ipxe/local.ipxe"), "#!ipxe\nexit\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.render(IPXE_LOCAL, &ctx).unwrap(), "#!ipxe\nexit\n");
        // A cmdline with an undefined variable fails when the context is built.
        let mut p = profile();
        p.cmdline = Some("ks={{ nope }}".into());
        assert!(
            host_context(
                "u",
                &p,
                &toml::Table::new(),
                Some(&h),
                None,
                None,
                NextBoot::Local
            )
            .is_err()
        );
    }
}
