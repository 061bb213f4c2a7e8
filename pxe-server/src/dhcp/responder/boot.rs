//! The boot answer: which file a client gets (by iPXE detection and client architecture) and
//! the options that carry it.

use dhcproto::v4::{self, DhcpOption};
use pxe_proto::consts::{BOOTP_FILE, HTTP_CLIENT, PXE_CLIENT, PXE_VENDOR_OPTIONS, arch};
use pxe_proto::dhcp::ClientRequest;

use super::{Ctx, Responder};
use crate::dhcp::leases::LeaseStore;
use crate::hosts::BootProfile;

/// The boot answer for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BootChoice<'a> {
    file: &'a str,
    /// Option 60 in the answer.
    class: &'static [u8],
    /// Send option 43 (PXE firmware that is not iPXE).
    pxe_options: bool,
}

/// One boot file field of a profile.
type ProfileField = fn(&BootProfile) -> &Option<String>;

/// The boot file field a client architecture (option 93) is answered from, and whether it is
/// an HTTP boot client's; `None`: an architecture we do not boot.
fn profile_for_arch(a: u16) -> Option<(ProfileField, bool)> {
    let field: ProfileField = match a {
        arch::X86_BIOS => |p| &p.bios,
        arch::X86_UEFI => |p| &p.uefi_ia32,
        arch::X64_UEFI | arch::EBC => |p| &p.uefi_x64,
        arch::ARM64_UEFI => |p| &p.arm64,
        arch::X64_UEFI_HTTP => return Some((|p| &p.uefi_http, true)),
        _ => return None,
    };
    Some((field, false))
}

impl<S: LeaseStore> Responder<S> {
    /// A profile field: the host's, else the default's.
    fn profile_field(
        &self,
        host: Option<usize>,
        f: impl Fn(&BootProfile) -> &Option<String>,
    ) -> Option<&str> {
        host.and_then(|h| f(&self.cfg.hosts.get(h).boot).as_deref())
            .or_else(|| f(&self.cfg.boot).as_deref())
    }

    /// The boot file for this client, by iPXE detection and architecture (option 93).
    pub(super) fn select_boot(&self, ctx: &Ctx<'_, '_>) -> Option<BootChoice<'_>> {
        let req = ctx.req;
        if req.is_ipxe()
            && let Some(file) = self.profile_field(ctx.host, |p| &p.ipxe_script)
        {
            return Some(BootChoice {
                file,
                class: if req.is_http() {
                    &HTTP_CLIENT[..]
                } else {
                    &PXE_CLIENT[..]
                },
                pxe_options: false,
            });
        }
        let (file, http) = match profile_for_arch(req.arch()) {
            Some((field, http)) => (self.profile_field(ctx.host, field), http),
            None => (None, false),
        };
        if req.is_http() && !http {
            return None;
        }
        Some(BootChoice {
            file: file?,
            class: if http {
                &HTTP_CLIENT[..]
            } else {
                &PXE_CLIENT[..]
            },
            pxe_options: !http && !req.is_ipxe(),
        })
    }
}

/// Puts the boot file (the `file` field, or option 67 when it does not fit or for HTTP boot),
/// option 60, PXE's option 43 and the client's UUID (option 97) into `m`.
pub(super) fn add_boot(m: &mut v4::Message, req: &ClientRequest<'_>, boot: &BootChoice<'_>) {
    let file = boot.file.as_bytes();
    if file.len() < BOOTP_FILE.len() {
        m.set_fname(file);
    }
    let o = m.opts_mut();
    if file.len() >= BOOTP_FILE.len() || boot.class == &HTTP_CLIENT[..] {
        o.insert(DhcpOption::BootfileName(file.to_vec()));
    }
    o.insert(DhcpOption::ClassIdentifier(boot.class.to_vec()));
    if boot.pxe_options {
        o.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
    }
    // PXE: the server returns the client's UUID (option 97) unchanged.
    if let Some(u) = req.client_uuid {
        let mut v = Vec::with_capacity(17);
        v.push(0);
        v.extend_from_slice(&u.to_wire());
        o.insert(DhcpOption::ClientMachineIdentifier(v));
    }
}
