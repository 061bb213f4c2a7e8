//! Which phase a requested name (a TFTP file, an HTTP path) stands for.
//!
//! In order: the names the configuration gives (`[boot]` and every host's `boot` override:
//! boot files, `ipxe_script`, `kernel`, `initrd`), the install routes (`/boot.ipxe` is the
//! script, `/install/...` a template), the `[journeys]` globs, then the built-in globs over
//! the last path segment (`*.efi`, `*.kpxe`, `*.pxe`, `*.0`: boot file; `*.ipxe`: script;
//! `vmlinuz*`, `bzImage*`, `linux`, `kernel*`: kernel; `initrd*`, `initramfs*`, `*.cpio*`:
//! initrd). The `[journeys]` globs come before the built-in ones so that an operator's
//! `linux*.efi` kernel is not taken for a boot file. A configured name that is a URL counts by
//! its path. Built once per configuration; [`FileClasses::classify`] allocates nothing.

use std::collections::HashMap;

use super::FileClass;

const DEFAULT_GLOBS: &[(&str, FileClass)] = &[
    ("*.efi", FileClass::BootFile),
    ("*.kpxe", FileClass::BootFile),
    ("*.pxe", FileClass::BootFile),
    ("*.0", FileClass::BootFile),
    ("*.ipxe", FileClass::Script),
    ("vmlinuz*", FileClass::Kernel),
    ("bzImage*", FileClass::Kernel),
    ("linux", FileClass::Kernel),
    ("kernel*", FileClass::Kernel),
    ("initrd*", FileClass::Initrd),
    ("initramfs*", FileClass::Initrd),
    ("*.cpio*", FileClass::Initrd),
];

/// The classes of one configuration.
#[derive(Debug, Clone)]
pub struct FileClasses {
    /// Exact names (without a leading `/`), from the configuration.
    names: HashMap<Box<str>, FileClass>,
    /// `[journeys]` globs, then the built-in ones; a glob with a `/` matches the whole name,
    /// else its last segment.
    globs: Vec<(Box<str>, FileClass)>,
}

impl Default for FileClasses {
    fn default() -> Self {
        FileClasses::builder().build()
    }
}

/// Collects the names and globs of a [`FileClasses`].
#[derive(Debug, Default)]
pub struct ClassesBuilder {
    names: HashMap<Box<str>, FileClass>,
    globs: Vec<(Box<str>, FileClass)>,
}

impl ClassesBuilder {
    /// `name` (a file name, a path or a URL) is of `class`; the first class given wins.
    pub fn name(&mut self, name: &str, class: FileClass) -> &mut Self {
        let key = normalize(url_path(name));
        if !key.is_empty() {
            self.names.entry(key.into()).or_insert(class);
        }
        self
    }

    pub fn globs(&mut self, globs: &[String], class: FileClass) -> &mut Self {
        self.globs
            .extend(globs.iter().map(|g| (normalize(g).into(), class)));
        self
    }

    pub fn build(&mut self) -> FileClasses {
        let mut globs = std::mem::take(&mut self.globs);
        globs.extend(DEFAULT_GLOBS.iter().map(|&(g, c)| (g.into(), c)));
        FileClasses {
            names: std::mem::take(&mut self.names),
            globs,
        }
    }
}

/// The path of a URL (`http://host/a/b?q` → `/a/b`), or `s` itself.
fn url_path(s: &str) -> &str {
    let Some((_, rest)) = s.split_once("://") else {
        return s;
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("")
}

/// Without leading slashes (TFTP clients send `/pxelinux.0` and `pxelinux.0` alike).
fn normalize(s: &str) -> &str {
    s.trim_start_matches('/')
}

impl FileClasses {
    pub fn builder() -> ClassesBuilder {
        ClassesBuilder::default()
    }

    /// The class of a requested name (a TFTP file name or an HTTP path, query included or
    /// not). Allocation-free.
    pub fn classify(&self, requested: &str) -> FileClass {
        let path = requested.split(['?', '#']).next().unwrap_or("");
        let name = normalize(path);
        if let Some(&c) = self.names.get(name) {
            return c;
        }
        if name == "boot.ipxe" {
            return FileClass::Script;
        }
        if name.starts_with("install/") {
            return FileClass::Template;
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        for (g, c) in &self.globs {
            let text = if g.contains('/') { name } else { last };
            if glob(g, text) {
                return *c;
            }
        }
        FileClass::Other
    }
}

/// `*` matches any run of characters, `?` one; everything else itself. Iterative with one
/// backtrack point, no recursion and no allocation.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // The length of the UTF-8 character starting at byte `i` of `s`.
    let width = |s: &str, i: usize| s[i..].chars().next().map_or(1, char::len_utf8);
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            ti += width(text, ti);
        } else if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            let next = st + width(text, st);
            pi = sp + 1;
            ti = next;
            star = Some((sp, next));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
