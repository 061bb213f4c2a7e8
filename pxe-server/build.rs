//! Builds the XDP program (`pxe-ebpf`'s bin target) for `bpfel-unknown-none` with the nightly
//! toolchain and `bpf-linker` (scripts/install-deps.sh installs both), into
//! `$OUT_DIR/pxe-ebpf`, which `src/xdp.rs` embeds.
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pxe-ebpf");
    let root = root.to_str().expect("the workspace path is UTF-8");
    if let Err(e) = aya_build::build_ebpf(
        [aya_build::Package {
            name: "pxe-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("nightly"),
    ) {
        panic!(
            "building the XDP program failed: {e:#}\n\
             (it needs the nightly toolchain with rust-src and bpf-linker 0.13.0: \
             run scripts/install-deps.sh as root)"
        );
    }
}
