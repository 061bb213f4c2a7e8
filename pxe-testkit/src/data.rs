//! Test data and digests.

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes (xorshift64*, seeded), so a block served at the wrong offset or
/// twice can never go unnoticed the way it could with a periodic pattern.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of the file at `path`, in lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Gives every account read and search permission on `dir` (a `tempfile` directory is 0700),
/// so that a server that dropped root's privileges can open by path what the test put there
/// (the config file and templates it reads again on reload, its control socket at exit;
/// served files are opened beneath the root's descriptor, which the server opened as root).
/// The files keep their own modes: a test of unreadable files still gets its refusal.
pub fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .permissions()
        .mode();
    if mode & 0o055 != 0o055 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o055))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_seeded_and_digests_agree() {
        assert_eq!(test_bytes(1000, 7), test_bytes(1000, 7));
        assert_ne!(test_bytes(1000, 7), test_bytes(1000, 8));
        assert_eq!(test_bytes(13, 7), test_bytes(1000, 7)[..13]);
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, test_bytes(100_000, 1)).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256(&test_bytes(100_000, 1)));
    }
}
